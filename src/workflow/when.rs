//! Evaluating a step's `when` (a CEL expression, checked at load by
//! `pipeline::when`) over the workflow input and its dependencies' outputs.
//!
//! Pure: CEL has no IO, no clock and no randomness, and the data it reads
//! is passed in. Its one source of variation is the order in which a macro
//! walks the keys of a JSON object (the crate keeps maps in a hash map);
//! the decision is journaled (`step_skipped`, or the step's dispatch), so a
//! replay never evaluates a condition again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pipeline::when::one_line;
use crate::pipeline::WhenDef;

/// Evaluates `when` with `input` (the workflow input, JSON text) and `deps`
/// (each dependency's name and output, JSON text; `None` for a skipped
/// one, which reads as `null`). `Ok(true)` runs the step, `Ok(false)` skips
/// it; an error (too much data, a type error, a missing field, a result that
/// is not a bool) says what went wrong.
pub fn evaluate(
    when: &WhenDef,
    input: &str,
    deps: &[(&str, Option<&str>)],
) -> Result<bool, String> {
    let program = cel::Program::compile(&when.text).map_err(|e| one_line(&e.to_string(), 300))?;
    let mut budget = Budget {
        left: when.values_max,
        max: when.values_max,
    };
    let input: serde_json::Value =
        serde_json::from_str(input).map_err(|e| format!("the workflow input is not JSON: {e}"))?;
    let input = budget.convert(&input)?;
    let mut map: HashMap<String, cel::Value> = HashMap::with_capacity(deps.len());
    for (name, output) in deps {
        let value = match output {
            Some(text) => {
                let json: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| format!("the output of {name} is not JSON: {e}"))?;
                budget.convert(&json)?
            }
            None => cel::Value::Null,
        };
        map.insert((*name).to_string(), value);
    }
    let mut context = cel::Context::default();
    context.add_variable_from_value("input", input);
    context.add_variable_from_value("deps", map);
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!(
            "evaluated to {}, not a bool",
            one_line(&format!("{other:?}"), 200)
        )),
        Err(e) => Err(one_line(&e.to_string(), 300)),
    }
}

/// JSON values an evaluation may still be given.
struct Budget {
    left: u32,
    max: u32,
}

impl Budget {
    /// `json` as a CEL value: integers as `int` (or `uint` above the range
    /// of `int`), other numbers as `double`, objects as maps.
    fn convert(&mut self, json: &serde_json::Value) -> Result<cel::Value, String> {
        if self.left == 0 {
            return Err(format!(
                "the input and outputs hold more than {} JSON values, the limit of a condition",
                self.max
            ));
        }
        self.left -= 1;
        Ok(match json {
            serde_json::Value::Null => cel::Value::Null,
            serde_json::Value::Bool(b) => cel::Value::Bool(*b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => cel::Value::Int(i),
                (None, Some(u)) => cel::Value::UInt(u),
                _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => cel::Value::String(Arc::new(s.clone())),
            serde_json::Value::Array(items) => {
                let mut list = Vec::with_capacity(items.len());
                for x in items {
                    list.push(self.convert(x)?);
                }
                cel::Value::List(Arc::new(list))
            }
            serde_json::Value::Object(fields) => {
                let mut map: HashMap<String, cel::Value> = HashMap::with_capacity(fields.len());
                for (k, v) in fields {
                    map.insert(k.clone(), self.convert(v)?);
                }
                map.into()
            }
        })
    }
}
