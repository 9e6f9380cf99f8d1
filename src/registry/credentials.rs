//! Registry credentials, found the way the Docker CLI finds them, and given only to the host they are for.
//!
//! Order: `MODEL_RUNNER_REGISTRY_USERNAME`/`_PASSWORD` (or `_TOKEN` for a bearer token) in the environment,
//! used only for the registry named by `MODEL_RUNNER_REGISTRY_HOST` (without it they are ignored, with a
//! warning: a server pulling whatever reference a client names must not hand them to any host); then
//! `auths` in `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), whose keys are hosts and whose
//! `auth` field is base64 of `user:password`. Anonymous otherwise; an anonymous bearer token is fetched
//! when the registry asks for one. Written here rather than through `docker_credential` because we need
//! only the `auths` map, and that crate would add its own process spawning for credential helpers.

use std::path::PathBuf;
use std::sync::Once;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;

const USERNAME_ENV: &str = "MODEL_RUNNER_REGISTRY_USERNAME";
const PASSWORD_ENV: &str = "MODEL_RUNNER_REGISTRY_PASSWORD";
const TOKEN_ENV: &str = "MODEL_RUNNER_REGISTRY_TOKEN";
/// The registry host the environment's credentials belong to (`ghcr.io`, `127.0.0.1:5000`).
pub const HOST_ENV: &str = "MODEL_RUNNER_REGISTRY_HOST";

/// The credentials to present to `registry` (`docker.io`, `127.0.0.1:5000`).
pub fn registry_auth(registry: &str) -> RegistryAuth {
    let env = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    let from_env = env_auth(
        env(TOKEN_ENV),
        env(USERNAME_ENV),
        std::env::var(PASSWORD_ENV).ok(),
    );
    if let Some(auth) = from_env {
        match env(HOST_ENV) {
            Some(host) if normalise_host(&host) == normalise_host(registry) => return auth,
            Some(_) => {}
            None => {
                static WARNED: Once = Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "registry credentials in the environment are ignored: set {HOST_ENV} to the registry they are for"
                    )
                });
            }
        }
    }
    docker_config_auth(registry).unwrap_or(RegistryAuth::Anonymous)
}

/// The environment's credentials, before asking whom they are for.
fn env_auth(
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
) -> Option<RegistryAuth> {
    if let Some(token) = token {
        return Some(RegistryAuth::Bearer(token));
    }
    Some(RegistryAuth::Basic(user?, password?))
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
    // Host names are case-insensitive; the comparison must not let a differently cased name through.
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

/// Whether a token realm on `realm_host` may receive credentials meant for `registry_host`: the same host,
/// or the same domain by its last two labels (`registry-1.docker.io` and `auth.docker.io`). Without a
/// public-suffix list `a.co.uk` and `b.co.uk` would match; registries under such suffixes are rare, and the
/// realm is still one the registry itself named. IP addresses must match exactly.
pub fn same_domain(registry_host: &str, realm_host: &str) -> bool {
    // The port does not change whose machine it is: `[::1]:5000` -> `[::1]`, `host:5000` -> `host`.
    let bare = |host: &str| {
        let host = host.to_ascii_lowercase();
        if let Some(end) = host.find(']') {
            return host[..=end].to_string();
        }
        match host.split_once(':') {
            Some((name, port)) if !port.contains(':') => name.to_string(),
            _ => host,
        }
    };
    let (registry, realm) = (bare(registry_host), bare(realm_host));
    if registry == realm {
        return true;
    }
    let is_ip = |h: &str| {
        h.trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok()
    };
    if is_ip(&registry) || is_ip(&realm) {
        return false;
    }
    let domain = |h: &str| -> Option<String> {
        let labels: Vec<&str> = h.trim_end_matches('.').rsplit('.').take(2).collect();
        (labels.len() == 2 && labels.iter().all(|l| !l.is_empty()))
            .then(|| format!("{}.{}", labels[1], labels[0]))
    };
    domain(&registry).is_some_and(|d| Some(d) == domain(&realm))
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

    #[test]
    fn credentials_reach_only_realms_in_the_registry_domain() {
        assert!(same_domain("index.docker.io", "auth.docker.io"));
        assert!(same_domain("127.0.0.1:5000", "127.0.0.1"));
        assert!(same_domain("ghcr.io", "ghcr.io"));
        assert!(!same_domain("registry.example.com", "evil.example.net"));
        assert!(!same_domain("127.0.0.1:5000", "localhost"));
        assert!(!same_domain("10.0.0.1", "10.0.0.2"));
        assert!(!same_domain("localhost", "evil.localhost.attacker.io"));
    }

    #[test]
    fn env_credentials_prefer_a_token_and_need_a_user_and_password() {
        assert!(matches!(
            env_auth(Some("t".into()), Some("u".into()), Some("p".into())),
            Some(RegistryAuth::Bearer(t)) if t == "t"
        ));
        assert!(matches!(
            env_auth(None, Some("u".into()), Some("p".into())),
            Some(RegistryAuth::Basic(u, p)) if u == "u" && p == "p"
        ));
        assert!(env_auth(None, Some("u".into()), None).is_none());
    }
}
