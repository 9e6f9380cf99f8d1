//! The terminal conversation of `model run`: one prompt (argument and/or piped stdin) or an interactive
//! chat with `"""` multi-line input and slash commands, over one `Answerer`, which answers either in
//! process or through a running server. Both stream the answer to stdout and return its text.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::Result;

use crate::engine::chat_template::ChatMessage;

/// What the user asked for each answer, whoever gives it.
#[derive(Debug, Clone)]
pub struct AnswerOptions {
    /// The model, as the user named it.
    pub model: String,
    pub temperature: Option<f32>,
    pub max_tokens: Option<usize>,
    pub seed: Option<u64>,
    /// Print counts and speeds after each answer.
    pub verbose: bool,
}

/// Gives the assistant's next message to a conversation, streaming it to stdout.
// Only ever used through generics inside this binary, so the future's Send bound is not needed.
#[allow(async_fn_in_trait)]
pub trait Answerer {
    /// Streams the answer to `history` to stdout; returns its text.
    async fn answer(&mut self, history: &[ChatMessage]) -> Result<String>;
}

/// Runs the conversation: one answer to a one-shot prompt, else turns until the user leaves.
pub async fn converse(
    system: Option<&str>,
    prompt: Option<&str>,
    answerer: &mut impl Answerer,
) -> Result<()> {
    let (mut history, one_shot) = opening(system, prompt)?;
    if let Some(prompt) = one_shot {
        history.push(ChatMessage::new("user", prompt));
        answerer.answer(&history).await?;
        return Ok(());
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    while next_turn(&mut lines, &mut history)? {
        let reply = answerer.answer(&history).await;
        record_reply(&mut history, reply);
    }
    Ok(())
}

/// The conversation's start: the system message, and the one-shot prompt (argument and/or piped stdin).
fn opening(
    system: Option<&str>,
    prompt: Option<&str>,
) -> Result<(Vec<ChatMessage>, Option<String>)> {
    let mut history = Vec::new();
    if let Some(system) = system {
        history.push(ChatMessage::new("system", system.to_string()));
    }
    let stdin = std::io::stdin();
    let piped = if stdin.is_terminal() {
        None
    } else {
        let mut text = String::new();
        stdin.lock().read_to_string(&mut text)?;
        Some(text).filter(|t| !t.trim().is_empty())
    };
    let one_shot = match (prompt, piped) {
        (Some(prompt), Some(input)) => Some(format!("{prompt}\n\n{input}")),
        (Some(prompt), None) => Some(prompt.to_string()),
        (None, Some(input)) => Some(input),
        (None, None) => None,
    };
    Ok((history, one_shot))
}

/// What the user typed at the interactive prompt.
enum Input {
    Message(String),
    Clear,
    Quit,
}

/// Reads the user's next turn into `history`, handling `/clear`; false when they leave.
fn next_turn(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    history: &mut Vec<ChatMessage>,
) -> Result<bool> {
    loop {
        match read_input(lines)? {
            None => continue,
            Some(Input::Quit) => return Ok(false),
            Some(Input::Clear) => {
                history.retain(|m| m.role == "system");
                println!("Cleared session context");
            }
            Some(Input::Message(text)) => {
                history.push(ChatMessage::new("user", text));
                return Ok(true);
            }
        }
    }
}

/// Ends a turn: the reply joins the history; on an error the question leaves it and the error is shown.
fn record_reply(history: &mut Vec<ChatMessage>, reply: Result<String>) {
    match reply {
        Ok(reply) => history.push(ChatMessage::new("assistant", reply)),
        Err(e) => {
            history.pop();
            eprintln!("Error: {e:#}");
        }
    }
}

/// Reads the next message: handles `"""` multi-line input and the slash commands; None for nothing to do.
fn read_input(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Result<Option<Input>> {
    print!(">>> ");
    std::io::stdout().flush()?;
    let Some(line) = lines.next().transpose()? else {
        println!();
        return Ok(Some(Input::Quit));
    };
    let mut input = line;
    if let Some(rest) = input.trim_start().strip_prefix("\"\"\"") {
        let mut text = rest.to_string();
        while !text.trim_end().ends_with("\"\"\"") {
            print!("... ");
            std::io::stdout().flush()?;
            let Some(next) = lines.next().transpose()? else {
                break;
            };
            text.push('\n');
            text.push_str(&next);
        }
        input = text.trim_end().trim_end_matches("\"\"\"").to_string();
    }
    Ok(match input.trim() {
        "" => None,
        "/bye" | "/exit" => Some(Input::Quit),
        "/clear" => Some(Input::Clear),
        "/?" | "/help" => {
            println!(
                "/bye to exit, /clear to forget the conversation, \"\"\" to begin and end multi-line input"
            );
            None
        }
        _ => Some(Input::Message(input)),
    })
}

/// Writes a piece of the answer to stdout at once.
pub fn show(piece: &str) {
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(piece.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> impl Iterator<Item = std::io::Result<String>> {
        text.lines()
            .map(|l| Ok(l.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn a_turn_reads_multi_line_input_and_clear_keeps_only_the_system_message() {
        let mut history = vec![
            ChatMessage::new("system", "be brief".to_string()),
            ChatMessage::new("user", "hi".to_string()),
        ];
        let mut input = lines("/clear\n\"\"\"one\ntwo\"\"\"\n/bye\n");
        assert!(next_turn(&mut input, &mut history).unwrap());
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].content, "one\ntwo");
        assert!(!next_turn(&mut input, &mut history).unwrap());
    }
}
