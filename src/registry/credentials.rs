//! Registry credentials, found the way the Docker CLI finds them.
//!
//! Order: `MODEL_RUNNER_REGISTRY_USERNAME`/`_PASSWORD` (or `_TOKEN` for a bearer token) in the environment,
//! then `auths` in `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), whose `auth` field is
//! base64 of `user:password`. Anonymous otherwise; oci-client then fetches an anonymous bearer token when
//! the registry asks for one. Written here rather than through `docker_credential` because we need only the
//! `auths` map, and that crate would add its own process spawning for credential helpers.

use std::path::PathBuf;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

const USERNAME_ENV: &str = "MODEL_RUNNER_REGISTRY_USERNAME";
const PASSWORD_ENV: &str = "MODEL_RUNNER_REGISTRY_PASSWORD";
const TOKEN_ENV: &str = "MODEL_RUNNER_REGISTRY_TOKEN";

/// The credentials to present to `registry` (`docker.io`, `127.0.0.1:5000`).
pub fn registry_auth(registry: &str) -> RegistryAuth {
    if let Ok(token) = std::env::var(TOKEN_ENV)
        && !token.is_empty()
    {
        return RegistryAuth::Bearer(token);
    }
    if let (Ok(user), Ok(password)) = (std::env::var(USERNAME_ENV), std::env::var(PASSWORD_ENV))
        && !user.is_empty()
    {
        return RegistryAuth::Basic(user, password);
    }
    docker_config_auth(registry).unwrap_or(RegistryAuth::Anonymous)
}

fn docker_config_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => dirs::home_dir().map(|h| h.join(".docker").join("config.json")),
    }
}

fn docker_config_auth(registry: &str) -> Option<RegistryAuth> {
    let text = std::fs::read_to_string(docker_config_path()?).ok()?;
    auth_from_config(&text, registry)
}

/// Looks `registry` up in a Docker config's `auths`, whose keys may be bare hosts or URLs.
fn auth_from_config(config_json: &str, registry: &str) -> Option<RegistryAuth> {
    let config: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let wanted = normalise_host(registry);
    let entry = auths
        .iter()
        .find(|(key, _)| normalise_host(key) == wanted)
        .map(|(_, v)| v)?;
    if let Some(token) = entry.get("registrytoken").and_then(|t| t.as_str()) {
        return Some(RegistryAuth::Bearer(token.to_string()));
    }
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_string(), password.to_string()))
}

/// `https://index.docker.io/v1/` and `docker.io` are the same registry to Docker.
fn normalise_host(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_are_found_by_host() {
        let config = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "127.0.0.1:5000":{"auth":"YWxpY2U6czNjcjN0"}}}"#;
        match auth_from_config(config, "docker.io") {
            Some(RegistryAuth::Basic(u, p)) => {
                assert_eq!((u.as_str(), p.as_str()), ("user", "pass"))
            }
            other => panic!("unexpected {other:?}"),
        }
        match auth_from_config(config, "127.0.0.1:5000") {
            Some(RegistryAuth::Basic(u, p)) => {
                assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cr3t"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(auth_from_config(config, "ghcr.io").is_none());
    }
}
