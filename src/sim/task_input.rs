//! The parts of a task's input the simulated workers read, and the `n`
//! of a dependency's output.

use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct TaskInput<'a> {
    #[serde(borrow, default)]
    pub(super) workflow: WorkflowInput<'a>,
    #[serde(borrow, default)]
    pub(super) deps: std::collections::BTreeMap<std::borrow::Cow<'a, str>, DepOutput>,
    /// A map element's own item (its `n`, if it has one, counts).
    #[serde(default)]
    pub(super) element: Option<DepOutput>,
}

/// The part of the workflow input the simulated workers read.
#[derive(Deserialize, Default)]
pub(super) struct WorkflowInput<'a> {
    #[serde(borrow, default)]
    video_id: Option<std::borrow::Cow<'a, str>>,
    /// How many segments every output lists (for pipelines that map over them).
    #[serde(default)]
    segments: Option<u32>,
    /// The language every output reports (for conditions that read it).
    #[serde(borrow, default)]
    language: Option<std::borrow::Cow<'a, str>>,
    /// A child workflow's input is `{"workflow": <parent's input>, "deps":
    /// ...}`: what the parent's input asks for holds for the child's tasks
    /// too, unless the child's own input says otherwise.
    #[serde(borrow, default)]
    workflow: Option<Box<WorkflowInput<'a>>>,
}

impl<'a> WorkflowInput<'a> {
    fn parent(&self) -> Option<&WorkflowInput<'a>> {
        self.workflow.as_deref()
    }

    pub(super) fn video_id(&self) -> Option<&str> {
        self.video_id
            .as_deref()
            .or_else(|| self.parent().and_then(WorkflowInput::video_id))
    }

    pub(super) fn segments(&self) -> Option<u32> {
        self.segments
            .or_else(|| self.parent().and_then(WorkflowInput::segments))
    }

    pub(super) fn language(&self) -> Option<&str> {
        self.language
            .as_deref()
            .or_else(|| self.parent().and_then(WorkflowInput::language))
    }
}

/// A dependency's output: one step's `{"n": ..}`, a map step's array of
/// them (`null` for an element that failed), or anything else (n = 0).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum DepOutput {
    Many(Vec<Option<DepOutput>>),
    One {
        #[serde(default)]
        n: u64,
    },
    Other(serde::de::IgnoredAny),
}

impl DepOutput {
    pub(super) fn n(&self) -> u64 {
        match self {
            DepOutput::Many(items) => items.iter().flatten().map(DepOutput::n).sum(),
            DepOutput::One { n } => *n,
            DepOutput::Other(_) => 0,
        }
    }
}
