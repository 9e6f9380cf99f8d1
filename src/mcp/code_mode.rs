//! Code mode: the `run_js {script}` tool runs model-written JavaScript in an embedded QuickJS
//! (`rquickjs`) where each allowed tool is a function (`tools["fs__list_directory"]({path})`, and a
//! global of the same name where the name is an identifier). One script can chain many calls and return
//! only what matters, instead of a round trip through the model per call.
//!
//! The sandbox has no file, network or process access of its own (QuickJS without its `std`/`os`
//! modules); only the tools reach outside. Wall time, memory, tool calls and output size are bounded:
//! the logs and the result's JSON are each cut at `Limits::output_bytes` (64 KiB by default).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rquickjs::{CatchResultExt, Context, Function, Runtime};
use serde_json::{Value, json};

pub const RUN_JS: &str = "run_js";

pub const DESCRIPTION: &str = "Run JavaScript that calls tools. Each tool is a function taking its arguments object and returning its result (parsed JSON when the tool returns structured content, else text); `tools` maps every tool name to its function. console.log output and the value of the last expression are returned. No file or network access except through tools.";

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub wall_time: Duration,
    pub memory_bytes: usize,
    pub output_bytes: usize,
    pub tool_calls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall_time: Duration::from_secs(30),
            memory_bytes: 64 << 20,
            output_bytes: 64 << 10,
            tool_calls: 64,
        }
    }
}

pub fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"script": {"type": "string", "description": "JavaScript to run."}},
        "required": ["script"]
    })
}

/// Calls one tool for the script: `Ok` is what the function returns to JavaScript, `Err` is thrown.
pub type ToolCaller = Arc<dyn Fn(&str, Value) -> Result<Value, String> + Send + Sync>;

/// What a script produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptOutput {
    /// `console.log` lines, cut at the output limit.
    pub logs: String,
    /// The last expression's value as JSON (`null` for `undefined`).
    pub result: Value,
}

/// Runs `script` (blocking: call it off the async runtime) with `tools` callable through `call`.
pub fn run(
    script: &str,
    tools: &[String],
    call: ToolCaller,
    limits: Limits,
) -> Result<ScriptOutput, String> {
    let runtime = Runtime::new().map_err(|e| format!("cannot start the JavaScript engine: {e}"))?;
    runtime.set_memory_limit(limits.memory_bytes);
    runtime.set_max_stack_size(1 << 20);
    let deadline = Instant::now() + limits.wall_time;
    runtime.set_interrupt_handler(Some(Box::new(move || Instant::now() > deadline)));
    let context =
        Context::full(&runtime).map_err(|e| format!("cannot start the JavaScript engine: {e}"))?;
    let logs = Rc::new(RefCell::new(String::new()));
    let calls = Rc::new(RefCell::new(0usize));
    let names = serde_json::to_string(tools).unwrap_or_else(|_| "[]".into());
    context.with(|ctx| {
        let globals = ctx.globals();
        let log = {
            let logs = logs.clone();
            Function::new(ctx.clone(), move |line: String| {
                let mut logs = logs.borrow_mut();
                if logs.len() < limits.output_bytes {
                    logs.push_str(&line);
                    logs.push('\n');
                    if logs.len() > limits.output_bytes {
                        let mut cut = limits.output_bytes;
                        while !logs.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        logs.truncate(cut);
                        logs.push_str("\n[output truncated]\n");
                    }
                }
            })
        }
        .map_err(|e| e.to_string())?;
        let invoke = {
            let calls = calls.clone();
            Function::new(ctx.clone(), move |name: String, arguments: String| -> String {
                let mut count = calls.borrow_mut();
                *count += 1;
                if *count > limits.tool_calls {
                    return json!({"error": format!("more than {} tool calls", limits.tool_calls)}).to_string();
                }
                let arguments = serde_json::from_str(&arguments).unwrap_or_else(|_| json!({}));
                match call(&name, arguments) {
                    Ok(value) => json!({"value": value}).to_string(),
                    Err(error) => json!({"error": error}).to_string(),
                }
            })
        }
        .map_err(|e| e.to_string())?;
        globals.set("__log", log).map_err(|e| e.to_string())?;
        globals.set("__invoke", invoke).map_err(|e| e.to_string())?;
        globals.set("__names", names).map_err(|e| e.to_string())?;
        ctx.eval::<(), _>(PRELUDE).map_err(|e| format!("prelude: {e}"))?;
        let result = ctx
            .eval::<rquickjs::Value, _>(script)
            .catch(&ctx)
            .map_err(|e| {
                if Instant::now() > deadline {
                    format!("the script ran past its {} s limit", limits.wall_time.as_secs_f64())
                } else {
                    format!("the script failed: {e}")
                }
            })?;
        let json = ctx
            .json_stringify(result)
            .ok()
            .flatten()
            .and_then(|s| s.to_string().ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(Value::Null);
        Ok(ScriptOutput {
            logs: logs.borrow().clone(),
            result: cap_result(json, limits.output_bytes),
        })
    })
}

/// The result as it goes back, at most `max` bytes of JSON: a larger one becomes a string holding its
/// first `max` bytes and a note of how much was cut (so one script cannot flood a prompt or a client).
fn cap_result(result: Value, max: usize) -> Value {
    let text = result.to_string();
    if text.len() <= max {
        return result;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Value::String(format!(
        "{}\n[result truncated: {} of {} bytes]",
        &text[..cut],
        cut,
        text.len()
    ))
}

const PRELUDE: &str = r#"
globalThis.console = {
  log: (...parts) => __log(parts.map(p => typeof p === "string" ? p : JSON.stringify(p)).join(" ")),
};
console.error = console.warn = console.info = console.log;
globalThis.tools = {};
for (const name of JSON.parse(__names)) {
  const fn = (args) => {
    const reply = JSON.parse(__invoke(name, JSON.stringify(args === undefined ? {} : args)));
    if ("error" in reply) throw new Error(reply.error);
    return reply.value;
  };
  tools[name] = fn;
  if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name)) globalThis[name] = fn;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn adder() -> ToolCaller {
        Arc::new(|name: &str, args: Value| match name {
            "math__add" => Ok(json!(
                args["a"].as_f64().unwrap_or(0.0) + args["b"].as_f64().unwrap_or(0.0)
            )),
            _ => Err(format!("no tool {name}")),
        })
    }

    #[test]
    fn scripts_call_tools_log_and_return_values() {
        let out = run(
            "const x = math__add({a: 2, b: 3}); console.log('sum', x); ({total: tools['math__add']({a: x, b: 1})})",
            &["math__add".to_string()],
            adder(),
            Limits::default(),
        )
        .expect("runs");
        assert_eq!(out.logs, "sum 5\n");
        assert_eq!(out.result, json!({"total": 6}));
    }

    #[test]
    fn tool_errors_are_exceptions_the_script_can_catch() {
        let out = run(
            "let m; try { tools.math__add; nothing__here() } catch (e) { m = String(e) } m",
            &["math__add".to_string()],
            adder(),
            Limits::default(),
        )
        .expect("runs");
        assert!(
            out.result.as_str().unwrap_or("").contains("nothing__here"),
            "{out:?}"
        );
    }

    #[test]
    fn runaway_scripts_are_stopped() {
        let limits = Limits {
            wall_time: Duration::from_millis(200),
            ..Limits::default()
        };
        let started = Instant::now();
        let err = run("while (true) {}", &[], adder(), limits).expect_err("stopped");
        assert!(err.contains("limit"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let err = run(
            "const a = []; while (true) a.push('x'.repeat(1000000));",
            &[],
            adder(),
            Limits {
                memory_bytes: 16 << 20,
                ..Limits::default()
            },
        )
        .expect_err("out of memory");
        assert!(err.contains("failed"), "{err}");
    }

    #[test]
    fn results_are_capped_like_logs() {
        let limits = Limits {
            output_bytes: 1000,
            ..Limits::default()
        };
        let out = run("'x'.repeat(1000000)", &[], adder(), limits).expect("runs");
        let text = out.result.as_str().expect("a cut result is a string");
        assert!(text.len() < 1100, "{} bytes", text.len());
        assert!(
            text.ends_with("[result truncated: 1000 of 1000002 bytes]"),
            "{text}"
        );
        let out = run(
            "Array.from({length: 100000}, (_, i) => ({i}))",
            &[],
            adder(),
            limits,
        )
        .expect("runs");
        let text = out.result.as_str().expect("a cut result is a string");
        assert!(
            text.len() < 1100 && text.starts_with("[{\"i\":0}"),
            "{text}"
        );
        let small = run("({a: [1, 2]})", &[], adder(), limits).expect("runs");
        assert_eq!(small.result, json!({"a": [1, 2]}));
    }

    #[test]
    fn output_is_capped_and_there_is_no_file_access() {
        let out = run(
            "for (let i = 0; i < 100000; i++) console.log('line', i); typeof std === 'undefined' && typeof os === 'undefined' && typeof require === 'undefined'",
            &[],
            adder(),
            Limits {
                output_bytes: 1000,
                ..Limits::default()
            },
        )
        .expect("runs");
        assert!(out.logs.len() < 1100 && out.logs.ends_with("[output truncated]\n"));
        assert_eq!(out.result, json!(true));
    }
}
