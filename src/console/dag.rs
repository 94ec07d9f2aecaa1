//! One workflow's DAG as inline SVG: a column per depth (the longest chain
//! of `needs` before a step), a box per step coloured by its state, a line
//! per dependency.

use std::fmt::Write as _;

use super::html::escape;
use crate::admin::{StepReply, StepShape};

const BOX_W: usize = 170;
const BOX_H: usize = 44;
const GAP_X: usize = 50;
const GAP_Y: usize = 14;

/// Column of each step: 0 for steps that need nothing, else one more than
/// the deepest step it needs. Needs that point outside the list are ignored.
pub fn depths(steps: &[StepShape]) -> Vec<usize> {
    let mut depth = vec![0usize; steps.len()];
    // Pipelines are checked to be acyclic when loaded; `steps.len()`
    // passes bound the work all the same.
    for _ in 0..steps.len() {
        let mut changed = false;
        for (i, s) in steps.iter().enumerate() {
            let d = s
                .needs
                .iter()
                .filter_map(|&n| depth.get(usize::from(n)).map(|d| d + 1))
                .max()
                .unwrap_or(0);
            if d != depth[i] {
                depth[i] = d;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    depth
}

/// The SVG of `shape` with the states of `steps` (same order).
pub fn svg(shape: &[StepShape], steps: &[StepReply]) -> String {
    let depth = depths(shape);
    let mut row_of = vec![0usize; shape.len()];
    let mut rows_in: Vec<usize> = Vec::new();
    for (i, &d) in depth.iter().enumerate() {
        if rows_in.len() <= d {
            rows_in.resize(d + 1, 0);
        }
        row_of[i] = rows_in[d];
        rows_in[d] += 1;
    }
    let cols = rows_in.len().max(1);
    let rows = rows_in.iter().copied().max().unwrap_or(1).max(1);
    let width = cols * (BOX_W + GAP_X) - GAP_X + 20;
    let height = rows * (BOX_H + GAP_Y) - GAP_Y + 20;
    let at = |i: usize| {
        (
            10 + depth[i] * (BOX_W + GAP_X),
            10 + row_of[i] * (BOX_H + GAP_Y),
        )
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"dag\" id=\"dag\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" aria-label=\"workflow steps\">"
    );
    for (i, st) in shape.iter().enumerate() {
        for &n in &st.needs {
            let n = usize::from(n);
            if n >= shape.len() {
                continue;
            }
            let (x1, y1) = at(n);
            let (x2, y2) = at(i);
            let _ = write!(
                s,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\"/>",
                x1 + BOX_W,
                y1 + BOX_H / 2,
                y2 + BOX_H / 2
            );
        }
    }
    for (i, st) in shape.iter().enumerate() {
        let (x, y) = at(i);
        let reply = steps.get(i);
        let status = reply.map_or("pending", |r| r.status.as_str());
        let attempts = reply.map_or(0, |r| r.attempts);
        let _ = write!(
            s,
            "<g class=\"step\" data-step=\"{name}\" data-status=\"{status}\">\
             <title>{name}: {status}, attempt {attempts} of {max}</title>\
             <rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" fill=\"{fill}\"/>\
             <text x=\"{tx}\" y=\"{ty1}\" font-weight=\"600\">{name}</text>\
             <text x=\"{tx}\" y=\"{ty2}\">{status} · {attempts}/{max}</text></g>",
            name = escape(&st.name),
            status = escape(status),
            max = st.max_attempts,
            fill = fill(status),
            tx = x + 8,
            ty1 = y + 18,
            ty2 = y + 35,
        );
    }
    s.push_str("</svg>");
    s
}

fn fill(status: &str) -> &'static str {
    match status {
        "succeeded" => "#1f9d55",
        "failed" => "#d64545",
        "dispatched" => "#2f6fde",
        "backoff" => "#b7791f",
        _ => "#8a94a6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, needs: &[u16]) -> StepShape {
        StepShape {
            name: name.into(),
            task_type: name.into(),
            needs: needs.to_vec(),
            max_attempts: 3,
        }
    }

    #[test]
    fn a_step_sits_one_column_after_its_deepest_need() {
        // a -> b -> d, a -> c -> d, c -> e
        let s = [
            step("a", &[]),
            step("b", &[0]),
            step("c", &[0]),
            step("d", &[1, 2]),
            step("e", &[2]),
        ];
        assert_eq!(depths(&s), vec![0, 1, 1, 2, 2]);
        // Listed out of order, the columns are the same.
        let s = [step("d", &[1]), step("b", &[2]), step("a", &[])];
        assert_eq!(depths(&s), vec![2, 1, 0]);
    }

    #[test]
    fn the_svg_escapes_names_and_shows_each_state() {
        let shape = [step("<x>", &[]), step("y", &[0])];
        let steps = [
            StepReply {
                name: "<x>".into(),
                status: "failed".into(),
                attempts: 2,
                ..StepReply::default()
            },
            StepReply {
                name: "y".into(),
                status: "pending".into(),
                ..StepReply::default()
            },
        ];
        let svg = svg(&shape, &steps);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"), "{svg}");
        assert!(svg.contains("data-status=\"failed\""), "{svg}");
        assert!(svg.contains("failed · 2/3"), "{svg}");
        assert_eq!(svg.matches("<line ").count(), 1);
    }
}
