//! The OAuth grants, encrypted at rest under the runner's home:
//!
//! ```text
//! $MODEL_RUNNER_HOME/mcp-auth/        0700
//!   key                               32 random bytes, 0600, created on first use
//!   grants/<hex of the server label>  "MRG1" | 24-byte nonce | XChaCha20-Poly1305(JSON grant)
//!   locks/<hex of the server label>   empty, 0600: the advisory lock held while a grant is refreshed
//! ```
//!
//! The server label is the AEAD's associated data, so a grant file renamed to another server's name
//! does not decrypt. Files are written atomically (a temporary file renamed over the old one) with mode
//! 0600; a key file others can read is refused. Nothing outside this module reads or writes `mcp-auth/`.
//!
//! Several `model` processes may share one home (`model serve` and a CLI command): a refresh holds the
//! server's lock file (`flock`, released when the process ends or drops the guard) from reading the
//! grant to saving the refreshed one, so a rotating refresh token is spent once.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::OAuthError;
use super::flow::Tokens;
use super::registration::Client;

const MAGIC: &[u8; 4] = b"MRG1";
const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;
/// A grant file larger than this is not one this module wrote.
const MAX_GRANT_FILE: u64 = 256 * 1024;

/// What a login obtained for one server: where its tokens may go, and the tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The server's label in the gateway config.
    pub server: String,
    /// The MCP server URL the access token was obtained for: the only URL it is sent to.
    pub server_url: String,
    /// The RFC 8707 resource indicator the tokens were asked for.
    pub resource: String,
    pub issuer: String,
    /// The only URL the refresh token is sent to.
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    pub client: Client,
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds), when the server said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// When the access token was obtained (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("server", &self.server)
            .field("server_url", &self.server_url)
            .field("issuer", &self.issuer)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// Takes a token answer's tokens: a new access token, its expiry, and a new refresh token when
    /// the server rotated it (else the old one stays).
    pub fn set_tokens(&mut self, tokens: Tokens) {
        self.access_token = tokens.access_token;
        if tokens.refresh_token.is_some() {
            self.refresh_token = tokens.refresh_token;
        }
        self.expires_at = tokens
            .expires_in
            .map(|s| now().saturating_add(i64::try_from(s).unwrap_or(i64::MAX)));
        if tokens.scope.is_some() {
            self.scope = tokens.scope;
        }
        self.obtained_at = Some(now());
    }

    /// Whether the access token should be refreshed before it is used: it expires within a fifth of
    /// its lifetime (at most 30 s). Never, when the server gave no lifetime.
    pub fn needs_refresh(&self) -> bool {
        let Some(expires_at) = self.expires_at else {
            return false;
        };
        let lifetime = self
            .obtained_at
            .map_or(300, |obtained| expires_at.saturating_sub(obtained));
        let margin = (lifetime / 5).clamp(0, 30);
        expires_at.saturating_sub(margin) <= now()
    }
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The encrypted grants of one runner home.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

impl TokenStore {
    /// The store under `home` (nothing is created until a grant is saved).
    pub fn new(home: &Path) -> Self {
        Self {
            dir: home.join("mcp-auth"),
        }
    }

    fn grant_path(&self, server: &str) -> PathBuf {
        self.dir.join("grants").join(hex::encode(server.as_bytes()))
    }

    /// Saves a server's grant, replacing any older one.
    pub fn save(&self, grant: &Grant) -> Result<(), OAuthError> {
        let key = self
            .key(true)?
            .ok_or_else(|| OAuthError::Store("the key file could not be created".into()))?;
        let plain = serde_json::to_vec(grant).map_err(|e| OAuthError::Store(e.to_string()))?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher(&key)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: grant.server.as_bytes(),
                },
            )
            .map_err(|_| OAuthError::Store("encryption failed".into()))?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        let path = self.grant_path(&grant.server);
        create_private_dir(&self.dir)?;
        create_private_dir(&self.dir.join("grants"))?;
        crate::mcp::config_edit::atomic_write(&path, &bytes).map_err(io(&path))
    }

    /// A server's grant, if a login saved one.
    pub fn load(&self, server: &str) -> Result<Option<Grant>, OAuthError> {
        let path = self.grant_path(server);
        let bytes = match read_bounded(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let Some(key) = self.key(false)? else {
            return Err(OAuthError::Store(format!(
                "{} exists but the key file does not; run `model mcp auth login {server}` again",
                path.display()
            )));
        };
        let unreadable = || {
            OAuthError::Store(format!(
                "{} cannot be decrypted (another key, or damaged); run `model mcp auth login {server}` again",
                path.display()
            ))
        };
        if bytes.len() < MAGIC.len() + NONCE_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err(unreadable());
        }
        let (nonce, sealed) = bytes[MAGIC.len()..].split_at(NONCE_LEN);
        let plain = cipher(&key)
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: server.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        let grant: Grant = serde_json::from_slice(&plain).map_err(|_| unreadable())?;
        Ok(Some(grant))
    }

    /// Deletes a server's grant; whether there was one.
    pub fn delete(&self, server: &str) -> Result<bool, OAuthError> {
        let path = self.grant_path(server);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Takes server `server`'s refresh lock if no process holds it (`None` when one does). The lock
    /// is advisory: only processes that ask for it are kept out.
    pub fn try_lock(&self, server: &str) -> Result<Option<GrantLock>, OAuthError> {
        let dir = self.dir.join("locks");
        create_private_dir(&self.dir)?;
        create_private_dir(&dir)?;
        let path = dir.join(hex::encode(server.as_bytes()));
        let mut options = std::fs::OpenOptions::new();
        options.create(true).truncate(false).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&path).map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(GrantLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&path)(e)),
        }
    }

    /// The labels of the servers with a saved grant, sorted.
    pub fn servers(&self) -> Result<Vec<String>, OAuthError> {
        let dir = self.dir.join("grants");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir)(e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| hex::decode(name).ok())
            .filter_map(|bytes| String::from_utf8(bytes).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The key: read, or (with `create`) made on first use. `None` when absent and not created.
    fn key(&self, create: bool) -> Result<Option<[u8; KEY_LEN]>, OAuthError> {
        let path = self.dir.join("key");
        loop {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    check_private(&path)?;
                    let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                        OAuthError::Store(format!("{} is not a key file", path.display()))
                    })?;
                    return Ok(Some(key));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(&path)(e)),
            }
            create_private_dir(&self.dir)?;
            let mut key = [0u8; KEY_LEN];
            rand::rng().fill_bytes(&mut key);
            // tempfile creates the file 0600; `persist_noclobber` keeps a key another process made
            // first, and the loop then reads that one.
            let mut file = tempfile::Builder::new()
                .prefix(".key-")
                .tempfile_in(&self.dir)
                .map_err(io(&self.dir))?;
            file.write_all(&key)
                .and_then(|()| file.as_file().sync_all())
                .map_err(io(&path))?;
            match file.persist_noclobber(&path) {
                Ok(_) => return Ok(Some(key)),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io(&path)(e.error)),
            }
        }
    }
}

/// A held refresh lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct GrantLock {
    _file: std::fs::File,
}

fn cipher(key: &[u8; KEY_LEN]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> OAuthError + '_ {
    move |e| OAuthError::Store(format!("{}: {e}", path.display()))
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_GRANT_FILE)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn create_private_dir(dir: &Path) -> Result<(), OAuthError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io(dir))
}

/// Refuses a key file that others than its owner may read or write.
fn check_private(path: &Path) -> Result<(), OAuthError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(OAuthError::Store(format!(
                "{} is accessible to other users (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::oauth::registration::ClientAuth;

    fn grant(server: &str) -> Grant {
        Grant {
            server: server.into(),
            server_url: "https://mcp.example.com/mcp".into(),
            resource: "https://mcp.example.com/mcp".into(),
            issuer: "https://auth.example.com".into(),
            token_endpoint: "https://auth.example.com/token".into(),
            revocation_endpoint: None,
            client: Client {
                id: "c".into(),
                secret: Some("client-secret-value".into()),
                auth: ClientAuth::ClientSecretPost,
            },
            access_token: "access-token-value".into(),
            refresh_token: Some("refresh-token-value".into()),
            expires_at: Some(1),
            obtained_at: None,
            scope: None,
        }
    }

    #[test]
    fn a_refresh_lock_excludes_a_second_holder_until_dropped() {
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path());
        let held = store.try_lock("web").unwrap().expect("the first lock");
        assert!(store.try_lock("web").unwrap().is_none());
        assert!(store.try_lock("other").unwrap().is_some());
        drop(held);
        assert!(store.try_lock("web").unwrap().is_some());
        assert!(store.servers().unwrap().is_empty(), "a lock is not a grant");
    }

    #[test]
    fn grants_round_trip_encrypted_and_bound_to_their_server() {
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path());
        assert_eq!(store.load("web").unwrap(), None);
        store.save(&grant("web")).unwrap();
        store.save(&grant("other")).unwrap();
        assert_eq!(store.load("web").unwrap(), Some(grant("web")));
        assert_eq!(store.servers().unwrap(), ["other", "web"]);
        let file = std::fs::read(store.grant_path("web")).unwrap();
        for secret in [
            "access-token-value",
            "refresh-token-value",
            "client-secret-value",
        ] {
            assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&home.path().join("mcp-auth/key")), 0o600);
            assert_eq!(mode(&store.grant_path("web")), 0o600);
            assert_eq!(mode(&home.path().join("mcp-auth")), 0o700);
        }
        // Another server's file under this server's name does not decrypt.
        std::fs::copy(store.grant_path("other"), store.grant_path("web")).unwrap();
        assert!(store.load("web").is_err());
        assert!(store.delete("web").unwrap());
        assert!(!store.delete("web").unwrap());
        assert_eq!(store.servers().unwrap(), ["other"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let store = TokenStore::new(home.path());
        store.save(&grant("web")).unwrap();
        let key = home.path().join("mcp-auth/key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = store.load("web").unwrap_err().to_string();
        assert!(error.contains("chmod 600"), "{error}");
    }
}
