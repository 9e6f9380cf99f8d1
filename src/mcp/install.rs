//! Turns a catalog entry into a gateway server definition (the `mcpServers` shape the config reads):
//! a pinned package run by its runtime (`npx -y NAME@VERSION`, `uvx NAME@VERSION`, or
//! `docker run -i --rm` under sandbox flags) or a remote's URL and headers, with the arguments and
//! environment variables the entry declares filled from what the user gave.
//!
//! Secrets never need to be written into the config: `--secret K` makes the value `${K}`, which the
//! config resolves when it is loaded, from the gateway's `secrets` or the runner's environment.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::catalog::{Argument, Entry, KeyValueInput, Package};

/// The `_meta` key under which an entry may declare how its container must be sandboxed, e.g.
/// `{"network": true}` for a server that needs the network.
pub const SANDBOX_META: &str = "dev.model-runner/sandbox";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InstallError {
    #[error("{entry} needs the argument {name}: pass --arg {name}=VALUE")]
    MissingArgument { entry: String, name: String },
    #[error(
        "{entry} needs {name}: pass --secret {name} (its value then comes from the gateway's secrets or the server's environment) or --env {name}=VALUE"
    )]
    MissingVariable { entry: String, name: String },
    #[error("{entry} has no argument {name}; its arguments: {known}")]
    UnknownArgument {
        entry: String,
        name: String,
        known: String,
    },
    #[error("{entry} has no way to run here: {reason}")]
    Unsupported { entry: String, reason: String },
}

/// What the user chose for one install.
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    /// `--env K=V`: plain values (also for variables the entry does not declare).
    pub env: Vec<(String, String)>,
    /// `--secret K`: the value is `${K}`, resolved when the config is loaded.
    pub secrets: Vec<String>,
    /// `--arg NAME=VALUE`: values for arguments by their name or value hint (repeatable ones repeat).
    pub args: Vec<(String, String)>,
    /// `--tools a,b`: only these tools are offered.
    pub tools: Option<Vec<String>>,
    /// `--package npm|pypi|oci|remote`: which way to run when the entry offers several.
    pub prefer: Option<String>,
    pub sandbox: Sandbox,
}

/// Container limits for OCI packages.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub cpus: String,
    pub memory: String,
    /// A Docker network; `None`: `none` unless the entry declares network use, then Docker's default.
    pub network: Option<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self {
            cpus: "1".into(),
            memory: "512m".into(),
            network: None,
        }
    }
}

impl InstallOptions {
    /// The options of a server started at run time (Dynamic MCP), where no one is asked: every secret
    /// the entry declares, every required value it gives no default for and every `{placeholder}` in
    /// its values becomes a `${NAME}` reference, which resolving the definition fills from the gateway's
    /// secrets or the runner's environment (or names as missing).
    pub fn by_reference(entry: &Entry) -> Self {
        let server = &entry.server;
        let inputs = server
            .packages
            .iter()
            .flat_map(|p| &p.environment_variables)
            .chain(server.remotes.iter().flat_map(|r| &r.headers));
        let mut secrets: Vec<String> = Vec::new();
        for input in inputs {
            // A value with placeholders is filled from them; the input's own name is not asked for.
            let mut placeholders = Vec::new();
            let mut rest = input.value.as_deref().unwrap_or("");
            while let Some(start) = rest.find('{') {
                let Some(len) = rest[start + 1..].find('}') else {
                    break;
                };
                placeholders.push(rest[start + 1..start + 1 + len].to_uppercase());
                rest = &rest[start + 2 + len..];
            }
            let unfilled = input.is_required && input.value.is_none() && input.default.is_none();
            if placeholders.is_empty() && (input.is_secret || unfilled) {
                secrets.push(input.name.clone());
            }
            secrets.extend(placeholders);
        }
        secrets.sort();
        secrets.dedup();
        Self {
            secrets,
            ..Self::default()
        }
    }
}

/// A definition to write under `mcpServers`, and notes for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub definition: Value,
    pub notes: Vec<String>,
}

/// The server definition for `entry` with `options`.
pub fn definition(entry: &Entry, options: &InstallOptions) -> Result<Installed, InstallError> {
    let server = &entry.server;
    let unsupported = |reason: String| InstallError::Unsupported {
        entry: server.name.clone(),
        reason,
    };
    let runnable = |kind: &str| matches!(kind, "npm" | "pypi" | "oci");
    let package = match options.prefer.as_deref() {
        Some("remote") => None,
        Some(kind) => Some(
            server
                .packages
                .iter()
                .find(|p| p.registry_type == kind)
                .ok_or_else(|| unsupported(format!("it has no {kind} package")))?,
        ),
        None => server
            .packages
            .iter()
            .find(|p| runnable(&p.registry_type) && p.transport.kind == "stdio"),
    };
    let mut notes = Vec::new();
    let mut definition = match package {
        Some(package) => package_definition(entry, package, options, &mut notes)?,
        None => {
            let remote = server
                .remotes
                .iter()
                .find(|r| r.kind == "streamable-http")
                .ok_or_else(|| {
                    unsupported(
                        "no npm, PyPI or OCI package over stdio, and no streamable-HTTP remote"
                            .into(),
                    )
                })?;
            let headers = inputs(entry, &remote.headers, options, false, &mut notes)?;
            json!({"url": remote.url, "headers": headers})
        }
    };
    if let Some(tools) = &options.tools {
        definition["tools"] = json!(tools);
    }
    definition["catalog"] = json!({"name": server.name, "version": server.version});
    Ok(Installed { definition, notes })
}

fn package_definition(
    entry: &Entry,
    package: &Package,
    options: &InstallOptions,
    notes: &mut Vec<String>,
) -> Result<Value, InstallError> {
    let name = &entry.server.name;
    if package.transport.kind != "stdio" {
        return Err(InstallError::Unsupported {
            entry: name.clone(),
            reason: format!(
                "its {} package serves {}; only stdio packages run under the gateway",
                package.registry_type, package.transport.kind
            ),
        });
    }
    let all_args: Vec<&Argument> = package
        .runtime_arguments
        .iter()
        .chain(&package.package_arguments)
        .collect();
    for (key, _) in &options.args {
        if !all_args.iter().any(|a| a.is_named_by(key)) {
            let known: Vec<&str> = all_args.iter().filter_map(|a| a.key()).collect();
            return Err(InstallError::UnknownArgument {
                entry: name.clone(),
                name: key.clone(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
    }
    let runtime_args = arguments(entry, &package.runtime_arguments, options)?;
    let package_args = arguments(entry, &package.package_arguments, options)?;
    let env = inputs(entry, &package.environment_variables, options, true, notes)?;
    let pinned = |separator: &str| match &package.version {
        Some(version) => format!("{}{separator}{version}", package.identifier),
        None => package.identifier.clone(),
    };
    let (command, args) = match package.registry_type.as_str() {
        "npm" => {
            let mut args = runtime_args;
            args.extend(["-y".to_string(), pinned("@")]);
            args.extend(package_args);
            ("npx", args)
        }
        "pypi" => {
            let mut args = runtime_args;
            args.push(pinned("@"));
            args.extend(package_args);
            ("uvx", args)
        }
        "oci" => {
            let image = image_reference(package);
            let mut args = vec!["run".to_string(), "-i".into(), "--rm".into()];
            args.extend(sandbox_flags(entry, &options.sandbox));
            args.extend(runtime_args);
            for key in env.keys() {
                // The value travels in the docker CLI's environment, never on its command line.
                args.extend(["-e".to_string(), key.clone()]);
            }
            args.push(image);
            args.extend(package_args);
            ("docker", args)
        }
        other => {
            return Err(InstallError::Unsupported {
                entry: name.clone(),
                reason: format!("{other} packages cannot be installed"),
            });
        }
    };
    let mut definition = json!({"command": command, "args": args});
    if !env.is_empty() {
        definition["env"] = json!(env);
    }
    Ok(definition)
}

/// An OCI identifier with its version as the tag when it names neither tag nor digest.
fn image_reference(package: &Package) -> String {
    let id = &package.identifier;
    let last = id.rsplit('/').next().unwrap_or(id);
    match &package.version {
        Some(version) if !last.contains([':', '@']) => format!("{id}:{version}"),
        _ => id.clone(),
    }
}

/// `docker run` flags that confine a server: CPU and memory caps, no network unless the entry declares
/// it needs one (or the user names one), a read-only root with a private `/tmp`, no new privileges, no
/// capabilities, a bounded number of processes.
pub fn sandbox_flags(entry: &Entry, sandbox: &Sandbox) -> Vec<String> {
    let declares_network = entry
        .server
        .extra
        .get("_meta")
        .and_then(|m| m.get(SANDBOX_META))
        .and_then(|s| s.get("network"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut flags: Vec<String> = [
        "--cpus",
        &sandbox.cpus,
        "--memory",
        &sandbox.memory,
        "--pids-limit",
        "256",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--security-opt",
        "no-new-privileges",
        "--cap-drop",
        "ALL",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match (&sandbox.network, declares_network) {
        (Some(network), _) => flags.extend(["--network".to_string(), network.clone()]),
        (None, false) => flags.extend(["--network".to_string(), "none".into()]),
        (None, true) => {}
    }
    flags
}

/// The command-line words for `declared`, from fixed values, the user's `--arg`s and defaults.
fn arguments(
    entry: &Entry,
    declared: &[Argument],
    options: &InstallOptions,
) -> Result<Vec<String>, InstallError> {
    let mut words = Vec::new();
    for argument in declared {
        let given: Vec<&String> = options
            .args
            .iter()
            .filter(|(k, _)| argument.is_named_by(k))
            .map(|(_, v)| v)
            .collect();
        let values: Vec<String> = if !given.is_empty() {
            given.into_iter().cloned().collect()
        } else if let Some(value) = argument.value.as_ref().or(argument.default.as_ref()) {
            vec![value.clone()]
        } else if argument.is_required {
            return Err(InstallError::MissingArgument {
                entry: entry.server.name.clone(),
                name: argument.key().unwrap_or("?").to_string(),
            });
        } else {
            continue;
        };
        for value in values {
            if argument.kind == "named"
                && let Some(name) = &argument.name
            {
                words.push(name.clone());
            }
            words.push(value);
        }
    }
    Ok(words)
}

/// Environment variables or headers: the user's `--env`/`--secret`, else the entry's value or default;
/// `{name}` placeholders in an entry's value become `${NAME}` references when the user gave that name
/// as a secret. With `undeclared_too` (environment variables, not headers), what the user gave beyond
/// the entry's declarations is added.
fn inputs(
    entry: &Entry,
    declared: &[KeyValueInput],
    options: &InstallOptions,
    undeclared_too: bool,
    notes: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, InstallError> {
    let given = |name: &str| -> Option<String> {
        if options.secrets.iter().any(|s| s == name) {
            return Some(format!("${{{name}}}"));
        }
        options
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let missing = |name: &str| InstallError::MissingVariable {
        entry: entry.server.name.clone(),
        name: name.to_string(),
    };
    let mut out = BTreeMap::new();
    for input in declared {
        let value = if let Some(value) = given(&input.name) {
            if input.is_secret && !value.starts_with("${") {
                notes.push(format!(
                    "{} is a secret but was given with --env: it is stored in the config as written",
                    input.name
                ));
            }
            value
        } else if let Some(template) = &input.value {
            fill_placeholders(template, &given).map_err(|name| missing(&name))?
        } else if let Some(default) = &input.default {
            default.clone()
        } else if input.is_required {
            return Err(missing(&input.name));
        } else {
            continue;
        };
        out.insert(input.name.clone(), value);
    }
    if undeclared_too {
        for (key, value) in &options.env {
            out.entry(key.clone()).or_insert_with(|| value.clone());
        }
        for key in &options.secrets {
            out.entry(key.clone())
                .or_insert_with(|| format!("${{{key}}}"));
        }
    }
    Ok(out)
}

/// Replaces `{name}` in a server.json value by what the user gave for `NAME` (or `name`).
fn fill_placeholders(
    template: &str,
    given: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start + 1..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        let upper = name.to_uppercase();
        let value = given(&upper)
            .or_else(|| given(name))
            .ok_or_else(|| upper.clone())?;
        out.push_str(&value);
        rest = &rest[start + 2 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::catalog::{Catalog, ServerJson, Source};

    fn shipped(name: &str) -> Entry {
        Catalog::load(std::path::Path::new("/nonexistent"), &[])
            .expect("catalog")
            .find(name)
            .expect("entry")
            .clone()
    }

    fn entry(json: Value) -> Entry {
        Entry {
            server: serde_json::from_value::<ServerJson>(json).expect("server.json"),
            source: Source::Shipped,
        }
    }

    #[test]
    fn run_time_installs_refer_to_secrets_by_name() {
        let github = shipped("github");
        let options = InstallOptions::by_reference(&github);
        assert_eq!(options.secrets, vec!["GITHUB_TOKEN".to_string()]);
        let installed = definition(&github, &options).expect("a remote");
        assert_eq!(
            installed.definition["headers"]["Authorization"],
            "Bearer ${GITHUB_TOKEN}"
        );
        // Nothing to refer to: the definition is the plain install.
        let everything = shipped("everything");
        assert!(InstallOptions::by_reference(&everything).secrets.is_empty());
    }

    #[test]
    fn npm_and_pypi_packages_run_pinned_through_npx_and_uvx() {
        let everything = definition(&shipped("everything"), &InstallOptions::default())
            .expect("everything")
            .definition;
        assert_eq!(everything["command"], "npx");
        assert_eq!(
            everything["args"],
            json!([
                "-y",
                "@modelcontextprotocol/server-everything@2026.8.31",
                "stdio"
            ])
        );
        let time = definition(
            &shipped("time"),
            &InstallOptions {
                args: vec![("local-timezone".into(), "UTC".into())],
                tools: Some(vec!["get_current_time".into()]),
                ..Default::default()
            },
        )
        .expect("time")
        .definition;
        assert_eq!(
            time["args"],
            json!(["mcp-server-time@2026.10.10", "--local-timezone", "UTC"])
        );
        assert_eq!(time["tools"], json!(["get_current_time"]));
        assert_eq!(time["catalog"]["version"], "2026.10.10");
    }

    #[test]
    fn a_required_argument_must_be_given_and_may_repeat() {
        let filesystem = shipped("filesystem");
        let err = definition(&filesystem, &InstallOptions::default()).expect_err("no dir");
        assert!(
            err.to_string().contains("--arg allowed_directory="),
            "{err}"
        );
        let options = InstallOptions {
            args: vec![
                ("allowed_directory".into(), "/a".into()),
                ("allowed_directory".into(), "/b".into()),
            ],
            ..Default::default()
        };
        let args = definition(&filesystem, &options).expect("dirs").definition["args"].clone();
        assert_eq!(args[2], "/a");
        assert_eq!(args[3], "/b");
        let wrong = InstallOptions {
            args: vec![("nope".into(), "x".into())],
            ..Default::default()
        };
        assert!(matches!(
            definition(&filesystem, &wrong),
            Err(InstallError::UnknownArgument { .. })
        ));
    }

    #[test]
    fn oci_packages_run_sandboxed_with_secrets_out_of_argv() {
        let weather = entry(json!({
            "name": "com.example/weather", "version": "1.2.0", "description": "",
            "packages": [{"registryType": "oci", "identifier": "docker.io/example/weather",
                "version": "1.2.0", "transport": {"type": "stdio"},
                "environmentVariables": [{"name": "API_KEY", "isRequired": true, "isSecret": true}]}]
        }));
        let err = definition(&weather, &InstallOptions::default()).expect_err("no key");
        assert!(matches!(err, InstallError::MissingVariable { .. }));
        let installed = definition(
            &weather,
            &InstallOptions {
                secrets: vec!["API_KEY".into()],
                ..Default::default()
            },
        )
        .expect("weather");
        let d = installed.definition;
        assert_eq!(d["command"], "docker");
        assert_eq!(d["env"]["API_KEY"], "${API_KEY}");
        let args: Vec<&str> = d["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let joined = args.join(" ");
        for flag in [
            "--network none",
            "--read-only",
            "--security-opt no-new-privileges",
            "--cpus 1",
            "--memory 512m",
            "-e API_KEY docker.io/example/weather:1.2.0",
        ] {
            assert!(joined.contains(flag), "{flag} missing in {joined}");
        }
        // An entry that declares network use keeps Docker's default network; a user's choice wins.
        let mut networked = weather.clone();
        networked
            .server
            .extra
            .insert("_meta".into(), json!({SANDBOX_META: {"network": true}}));
        assert!(!sandbox_flags(&networked, &Sandbox::default()).contains(&"--network".into()));
        let chosen = Sandbox {
            network: Some("bridge".into()),
            ..Default::default()
        };
        assert!(sandbox_flags(&weather, &chosen).ends_with(&["--network".into(), "bridge".into()]));
    }

    #[test]
    fn remotes_get_their_headers_with_secret_references() {
        let github = shipped("github");
        assert!(definition(&github, &InstallOptions::default()).is_err());
        let d = definition(
            &github,
            &InstallOptions {
                secrets: vec!["GITHUB_TOKEN".into()],
                ..Default::default()
            },
        )
        .expect("github")
        .definition;
        assert_eq!(d["headers"]["Authorization"], "Bearer ${GITHUB_TOKEN}");
        assert!(d["url"].as_str().is_some_and(|u| u.starts_with("https://")));
        assert!(d.get("command").is_none());
    }
}
