//! Conditional steps: `when = "<CEL expression>"`. This file holds the
//! validated form ([`WhenDef`]) and the checks a file's condition passes at
//! load; the evaluation lives in `workflow::when`.
//!
//! The language is CEL (the Common Expression Language of Kubernetes, Argo
//! and Envoy) through the `cel` crate: no side effects, no loops other than
//! its macros over lists and maps, always terminating. The cost of one
//! evaluation is bounded by the length of the text, the number of macros
//! (`all`, `exists`, `exists_one`, `map`, `filter`: each walks one list)
//! and the number of JSON values the expression is given
//! ([`WhenDef::values_max`]).

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use serde::{Deserialize, Serialize};

use super::error::PipelineErrorKind;

/// Longest `when` text, in bytes, unless the limits say otherwise.
pub const DEFAULT_WHEN_LEN_MAX: usize = 4 * 1024;
/// Macros over lists one condition may use, unless the limits say otherwise.
pub const DEFAULT_WHEN_MACROS_MAX: usize = 2;
/// JSON values (every object, array, string, number, bool and null) one
/// evaluation may be given, the workflow input and the dependencies'
/// outputs together, unless the limits say otherwise.
pub const DEFAULT_WHEN_VALUES_MAX: u32 = 10_000;

/// The variables a condition may read.
pub const WHEN_VARIABLES: [&str; 2] = ["input", "deps"];

/// Type names CEL reads as identifiers (`type(x) == int`).
const TYPE_NAMES: [&str; 10] = [
    "bool",
    "bytes",
    "double",
    "int",
    "list",
    "map",
    "null_type",
    "string",
    "type",
    "uint",
];

/// A validated `when`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhenDef {
    /// The CEL expression as written.
    pub text: String,
    /// An evaluation given more JSON values than this fails the workflow.
    pub values_max: u32,
}

/// Bounds on conditions, part of [`super::PipelineLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhenLimits {
    pub len_max: usize,
    pub macros_max: usize,
    pub values_max: u32,
}

/// Checks what can be checked before a run: length, syntax, the number of
/// macros, and that the expression reads only `input` and the step's
/// dependencies (`deps.<name>` or `deps["<name>"]`). `needs` are the names
/// of the step's dependencies. The error is the problem only; the caller
/// adds the file and step.
pub(super) fn check_when(
    text: &str,
    needs: &[&str],
    limits: WhenLimits,
) -> Result<WhenDef, PipelineErrorKind> {
    let invalid = |message: String| PipelineErrorKind::BadCondition {
        expression: one_line(text, 200),
        message,
    };
    if text.len() > limits.len_max {
        return Err(invalid(format!(
            "is {} bytes long, the limit is {}",
            text.len(),
            limits.len_max
        )));
    }
    let program =
        cel::Program::compile(text).map_err(|e| invalid(one_line(&e.to_string(), 300)))?;
    let mut walk = Walk {
        needs,
        scope: Vec::new(),
        macros: 0,
        problem: None,
    };
    walk.expr(program.expression());
    if let Some(problem) = walk.problem {
        return Err(invalid(problem));
    }
    if walk.macros > limits.macros_max {
        return Err(invalid(format!(
            "uses {} macros over lists (all, exists, exists_one, map, filter), the limit is {}",
            walk.macros, limits.macros_max
        )));
    }
    Ok(WhenDef {
        text: text.to_owned(),
        values_max: limits.values_max,
    })
}

/// A walk over the parsed expression: the variables it reads, in the
/// scope of the macros around them, and the macros it uses.
struct Walk<'a> {
    needs: &'a [&'a str],
    /// Variables bound by the macros around the current node.
    scope: Vec<String>,
    macros: usize,
    /// The first problem found.
    problem: Option<String>,
}

impl Walk<'_> {
    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    fn dep(&mut self, name: &str) {
        if !self.needs.contains(&name) {
            let needs = if self.needs.is_empty() {
                "none".to_owned()
            } else {
                self.needs.join(", ")
            };
            self.fail(format!(
                "reads deps.{name}, which is not a dependency of the step (needs: {needs})"
            ));
        }
    }

    fn expr(&mut self, e: &IdedExpr) {
        match &e.expr {
            Expr::Ident(name) => {
                let known = WHEN_VARIABLES.contains(&name.as_str())
                    || TYPE_NAMES.contains(&name.as_str())
                    || self.scope.iter().any(|s| s == name);
                if !known {
                    self.fail(format!(
                        "reads unknown variable `{name}`: only `input` (the workflow input) and `deps` (the outputs of the step's dependencies) exist"
                    ));
                }
            }
            Expr::Select(select) => {
                if is_deps(&select.operand) && !self.scope.iter().any(|s| s == "deps") {
                    let field = select.field.clone();
                    self.dep(&field);
                }
                self.expr(&select.operand);
            }
            Expr::Call(call) => {
                if call.func_name == cel::common::ast::operators::INDEX
                    && call.args.first().is_some_and(is_deps)
                    && !self.scope.iter().any(|s| s == "deps")
                {
                    match call.args.get(1).map(|a| &a.expr) {
                        Some(Expr::Literal(cel::common::ast::LiteralValue::String(s))) => {
                            let name = s.inner().to_owned();
                            self.dep(&name);
                        }
                        _ => self.fail(
                            "indexes deps with a computed key: name the dependency, as deps.<name> or deps[\"<name>\"]"
                                .to_owned(),
                        ),
                    }
                }
                if let Some(target) = &call.target {
                    self.expr(target);
                }
                for a in &call.args {
                    self.expr(a);
                }
            }
            Expr::Comprehension(c) => {
                self.macros += 1;
                self.expr(&c.iter_range);
                self.expr(&c.accu_init);
                let bound = 2 + usize::from(c.iter_var2.is_some());
                self.scope.push(c.iter_var.clone());
                self.scope.push(c.accu_var.clone());
                if let Some(v) = &c.iter_var2 {
                    self.scope.push(v.clone());
                }
                self.expr(&c.loop_cond);
                self.expr(&c.loop_step);
                self.expr(&c.result);
                self.scope.truncate(self.scope.len() - bound);
            }
            Expr::List(list) => {
                for x in &list.elements {
                    self.expr(x);
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(m) => {
                            self.expr(&m.key);
                            self.expr(&m.value);
                        }
                        EntryExpr::StructField(f) => self.expr(&f.value),
                    }
                }
            }
            Expr::Struct(_) => {
                self.fail("builds a message: conditions read JSON values only".to_owned())
            }
            Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
}

fn is_deps(e: &IdedExpr) -> bool {
    matches!(&e.expr, Expr::Ident(name) if name == "deps")
}

/// `text` on one line, cut after `max` characters: a parser's message can
/// span lines, and a value can be large.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}
