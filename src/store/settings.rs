//! Per-model runtime settings (`model configure`, Docker Model Runner's `_configure`): the context size, the
//! reasoning budget and the keep-alive a model is loaded with. They live in the reference index, keyed by
//! model ID, so every tag of a model shares them and they go when the model does.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Largest context size a model may be configured with (llama.cpp's models top out at 1M positions).
pub const MAX_CONTEXT_SIZE: u64 = 1 << 20;

/// Longest keep-alive that still counts down; longer ones, and negative ones, mean "for ever".
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("context size must be between 1 and {MAX_CONTEXT_SIZE}, got {0}")]
    ContextSize(i64),
    #[error(
        "reasoning budget must be -1 (no limit) or 0 (no thinking), as llama.cpp's --reasoning-budget; got {0}"
    )]
    ReasoningBudget(i64),
    #[error(
        "keep-alive must be a duration like \"5m\", \"1h\" or \"30s\", 0, or -1 for ever; got {0:?}"
    )]
    KeepAlive(String),
    #[error(
        "runtime flag {0:?} is not supported by this runner; it takes --ctx-size and --reasoning-budget"
    )]
    UnknownFlag(String),
    #[error("runtime flag {flag} needs a whole number, got {value:?}")]
    FlagValue { flag: &'static str, value: String },
}

/// What a model is loaded with, where its owner said so; `None` fields fall back to the server's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ModelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u32>,
    /// -1: think without limit; 0: do not think (templates that read `enable_thinking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_budget: Option<i32>,
    /// As given (`"10m"`, `"-1"`); checked by `parse_keep_alive` before it is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<String>,
}

impl ModelSettings {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// These settings with every field `update` sets replaced.
    pub fn merged(&self, update: &ModelSettings) -> ModelSettings {
        ModelSettings {
            context_size: update.context_size.or(self.context_size),
            reasoning_budget: update.reasoning_budget.or(self.reasoning_budget),
            keep_alive: update.keep_alive.clone().or(self.keep_alive.clone()),
        }
    }

    /// The keep-alive to load with: `None` when unset, `Some(None)` for ever.
    pub fn keep_alive(&self) -> Option<Option<Duration>> {
        self.keep_alive
            .as_deref()
            .and_then(|k| parse_keep_alive(k).ok())
    }

    /// Whether thinking is off by default (a budget of 0).
    pub fn thinking_disabled(&self) -> bool {
        self.reasoning_budget == Some(0)
    }
}

/// The settings llama.cpp runtime flags ask for (`--ctx-size 4096`, `-c=4096`, `--reasoning-budget 0`,
/// as Docker Model Runner passes them through); flags without an equivalent here are refused.
pub fn from_runtime_flags<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> Result<ModelSettings, SettingsError> {
    let mut settings = ModelSettings::default();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let (name, inline) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (word, None),
        };
        let flag = match name {
            "-c" | "--ctx-size" => "--ctx-size",
            "--reasoning-budget" => "--reasoning-budget",
            other => return Err(SettingsError::UnknownFlag(other.chars().take(64).collect())),
        };
        let value = inline.or_else(|| words.next()).unwrap_or_default();
        let number: i64 = value.parse().map_err(|_| SettingsError::FlagValue {
            flag,
            value: value.chars().take(64).collect(),
        })?;
        if flag == "--ctx-size" {
            settings.context_size = Some(context_size(number)?);
        } else {
            settings.reasoning_budget = Some(reasoning_budget(number)?);
        }
    }
    Ok(settings)
}

/// A checked context size.
pub fn context_size(n: i64) -> Result<u32, SettingsError> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_CONTEXT_SIZE).contains(&u64::from(*n)))
        .ok_or(SettingsError::ContextSize(n))
}

/// A checked reasoning budget.
pub fn reasoning_budget(n: i64) -> Result<i32, SettingsError> {
    match n {
        -1 | 0 => Ok(n as i32),
        other => Err(SettingsError::ReasoningBudget(other)),
    }
}

/// A keep-alive as Ollama and Docker Model Runner write it: a duration (`"5m"`, `"1h30m"`, `"30s"`,
/// `"500ms"`), a number of seconds, 0 to unload at once, or anything negative for ever. `Some(None)` is
/// "for ever"; so is anything past `MAX_KEEP_ALIVE`, which no timer needs to count.
pub fn parse_keep_alive(text: &str) -> Result<Option<Duration>, SettingsError> {
    let bad = || SettingsError::KeepAlive(text.chars().take(64).collect());
    let text = text.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let seconds = match digits.parse::<f64>() {
        Ok(n) => n,
        Err(_) => duration_seconds(digits).ok_or_else(bad)?,
    };
    if !seconds.is_finite() {
        return Err(bad());
    }
    keep_alive_from_seconds(if negative { -seconds } else { seconds }).ok_or_else(bad)
}

/// A keep-alive given in seconds: negative or past `MAX_KEEP_ALIVE` is for ever; NaN is no keep-alive.
pub fn keep_alive_from_seconds(seconds: f64) -> Option<Option<Duration>> {
    if seconds.is_nan() {
        None
    } else if seconds < 0.0 || seconds >= MAX_KEEP_ALIVE.as_secs_f64() {
        Some(None)
    } else {
        Some(Some(Duration::from_secs_f64(seconds)))
    }
}

/// Go's duration syntax, as Docker Model Runner parses keep-alives: number-unit pairs (`1h30m`).
fn duration_seconds(text: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number.parse::<f64>().ok()? * scale;
        rest = tail;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alives_read_as_ollama_and_docker_model_runner_write_them() {
        let secs = |s: u64| Ok(Some(Duration::from_secs(s)));
        assert_eq!(parse_keep_alive("5m"), secs(300));
        assert_eq!(parse_keep_alive("1h30m"), secs(5400));
        assert_eq!(parse_keep_alive("30"), secs(30));
        assert_eq!(parse_keep_alive("0"), secs(0));
        assert_eq!(
            parse_keep_alive("500ms"),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_keep_alive("-1"), Ok(None));
        assert_eq!(parse_keep_alive("-5m"), Ok(None));
        assert_eq!(
            parse_keep_alive("1e20"),
            Ok(None),
            "past a year is for ever"
        );
        for bad in ["", "-", "5x", "m", "1.2.3s", "NaN", "inf", "5m-3s"] {
            assert!(parse_keep_alive(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn settings_merge_field_by_field_and_check_their_ranges() {
        let old = ModelSettings {
            context_size: Some(4096),
            reasoning_budget: Some(0),
            keep_alive: None,
        };
        let update = ModelSettings {
            context_size: Some(8192),
            keep_alive: Some("10m".into()),
            ..Default::default()
        };
        let merged = old.merged(&update);
        assert_eq!(merged.context_size, Some(8192));
        assert_eq!(merged.reasoning_budget, Some(0));
        assert_eq!(merged.keep_alive(), Some(Some(Duration::from_secs(600))));
        assert!(merged.thinking_disabled());
        assert_eq!(context_size(0), Err(SettingsError::ContextSize(0)));
        assert!(context_size(MAX_CONTEXT_SIZE as i64 + 1).is_err());
        assert_eq!(context_size(2048), Ok(2048));
        assert!(reasoning_budget(512).is_err());
        assert_eq!(reasoning_budget(-1), Ok(-1));
    }

    #[test]
    fn runtime_flags_with_an_equivalent_here_are_read_and_others_refused() {
        let settings = from_runtime_flags(["--ctx-size", "8192", "--reasoning-budget=0"]).unwrap();
        assert_eq!(settings.context_size, Some(8192));
        assert_eq!(settings.reasoning_budget, Some(0));
        assert_eq!(
            from_runtime_flags(["-c=512"]).unwrap().context_size,
            Some(512)
        );
        assert_eq!(
            from_runtime_flags(["--threads", "4"]),
            Err(SettingsError::UnknownFlag("--threads".into()))
        );
        assert!(matches!(
            from_runtime_flags(["--ctx-size"]),
            Err(SettingsError::FlagValue { .. })
        ));
        assert!(matches!(
            from_runtime_flags(["-c", "lots"]),
            Err(SettingsError::FlagValue { .. })
        ));
    }
}
