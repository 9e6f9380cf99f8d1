//! OpenAI's Responses API with real clients on the default model: the openai SDK (create, stream,
//! a function tool round trip over `previous_response_id`, json_schema, stored responses, errors), the
//! OpenAI Agents SDK in its Responses and chat-completions modes, and stored responses that outlive a
//! restart. Every loop is bounded and talks only to 127.0.0.1.

mod common;

use std::time::Duration;

use common::{Server, cli_with_default_model};
use serde_json::Value;

fn get(url: &str) -> (u16, Value) {
    let response = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// The openai SDK's Responses surface, then a restart: the stored response is still there.
#[test]
fn openai_sdk_responses_create_stream_tools_and_stored_state() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let out = server.run_python("responses_api.py");
    assert!(out.contains("responses API checks passed"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("STORED "))
        .expect("the script names a stored response")
        .to_string();
    drop(server);
    let server = Server::start(&cli, &[]);
    let (status, body) = get(&server.url(&format!("/v1/responses/{id}")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    let (status, body) = get(&server.url(&format!("/engines/v1/responses/{id}/input_items")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1), "{body}");
    assert!(
        cli.home.path().join("responses/responses.redb").exists(),
        "stored under the store root"
    );
}

/// The OpenAI Agents SDK runs an agent with a function tool against our `/v1`, through
/// `OpenAIResponsesModel` and through `OpenAIChatCompletionsModel`.
#[test]
fn openai_agents_sdk_runs_a_function_tool_agent_in_both_modes() {
    let cli = cli_with_default_model();
    let server = Server::start(&cli, &[]);
    let out = server.run_python("responses_agents.py");
    assert!(out.contains("agents checks passed"), "{out}");
}
