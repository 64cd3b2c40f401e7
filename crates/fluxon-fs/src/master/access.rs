//! The access DB: users (argon2 password hashes), scopes and the token signing key, all kept in
//! a [`StateStore`] (redb at `master_panel.access_db_path` by default).
//!
//! Keys: `access/user/<username>` and `access/scope/<export>\0<prefix>\0<mode>` (JSON records),
//! `meta/token_signing_seed` (the Ed25519 seed; the DB file is created with mode 0600).
//! `bootstrap_access_model` is written only while there are no users, in one conditional batch,
//! so concurrent masters cannot both bootstrap. Users bootstrapped as `admin`/`admin` must change
//! the password before they can log in.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use fluxon_fs_proto::{AccessMode, Scope, TokenSigner};
use serde::{Deserialize, Serialize};

use crate::config::{self, BootstrapAccessModel};
use crate::store::{Batch, BatchOutcome, CasOutcome, StateStore, StoreError};

const USER_PREFIX: &str = "access/user/";
const SCOPE_PREFIX: &str = "access/scope/";
const SIGNING_SEED: &[u8] = b"meta/token_signing_seed";
const PAGE: usize = 512;

/// Access DB errors.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt access DB record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("{0}")]
    Invalid(String),
    #[error("user `{0}` does not exist")]
    NoSuchUser(String),
    #[error("user `{0}` already exists")]
    UserExists(String),
}

/// A stored user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub username: String,
    /// PHC string (argon2id).
    pub password_hash: String,
    pub can_manage_users: bool,
    /// Set for a default `admin`/`admin` bootstrap: log in only after a password change.
    #[serde(default)]
    pub must_change_password: bool,
}

/// A stored scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRecord {
    pub export_name: String,
    /// Normalised: '' or `dir/sub`.
    pub prefix: String,
    pub mode: config::AccessMode,
    pub usernames: Vec<String>,
}

impl ScopeRecord {
    fn key(&self) -> Vec<u8> {
        scope_key(&self.export_name, &self.prefix, self.mode)
    }
}

fn scope_key(export: &str, prefix: &str, mode: config::AccessMode) -> Vec<u8> {
    let mode = match mode {
        config::AccessMode::Read => "read",
        config::AccessMode::ReadWrite => "read_write",
    };
    format!(
        "{SCOPE_PREFIX}{export}\0{}\0{mode}",
        prefix.trim_matches('/')
    )
    .into_bytes()
}

fn user_key(username: &str) -> Vec<u8> {
    format!("{USER_PREFIX}{username}").into_bytes()
}

/// Hashes `password` with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, AccessError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| AccessError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AccessError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AccessError::Hash(e.to_string()))
}

/// Checks `password` against a stored PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The access DB.
#[derive(Clone)]
pub struct AccessDb {
    store: Arc<dyn StateStore>,
}

impl AccessDb {
    pub fn new(store: Arc<dyn StateStore>) -> AccessDb {
        AccessDb { store }
    }

    /// Writes `model` if the DB has no users yet; returns whether it did.
    pub async fn bootstrap(&self, model: &BootstrapAccessModel) -> Result<bool, AccessError> {
        if !self
            .store
            .list_prefix(USER_PREFIX.as_bytes(), None, 1)
            .await?
            .is_empty()
        {
            return Ok(false);
        }
        let mut batch = Batch::new();
        for user in &model.users {
            let password = user.password.expose().to_string();
            let hash = tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| AccessError::Hash(e.to_string()))??;
            let record = UserRecord {
                username: user.username.clone(),
                password_hash: hash,
                can_manage_users: user.can_manage_users,
                must_change_password: user.username == "admin" && user.password.expose() == "admin",
            };
            let key = user_key(&user.username);
            batch = batch.check(&key, None).put(&key, &to_json(&record));
        }
        for scope in &model.scope_access {
            let record = ScopeRecord {
                export_name: scope.export_name.clone(),
                prefix: scope.prefix.trim_matches('/').to_string(),
                mode: scope.mode,
                usernames: scope.usernames.clone(),
            };
            batch = batch.put(&record.key(), &to_json(&record));
        }
        match self.store.batch(batch).await? {
            BatchOutcome::Applied { .. } => Ok(true),
            // Another master bootstrapped first; its data wins.
            BatchOutcome::Conflict { .. } => Ok(false),
        }
    }

    /// The token signing key, created on first use.
    pub async fn signer(&self) -> Result<TokenSigner, AccessError> {
        loop {
            if let Some(v) = self.store.get(SIGNING_SEED).await? {
                let seed: [u8; 32] =
                    v.value
                        .as_slice()
                        .try_into()
                        .map_err(|_| AccessError::Corrupt {
                            key: "meta/token_signing_seed".into(),
                            reason: "expected 32 bytes".into(),
                        })?;
                return Ok(TokenSigner::from_seed(&seed));
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| AccessError::Hash(e.to_string()))?;
            if let CasOutcome::Swapped { .. } = self
                .store
                .compare_and_swap(SIGNING_SEED, None, Some(seed.to_vec()))
                .await?
            {
                return Ok(TokenSigner::from_seed(&seed));
            }
        }
    }

    pub async fn user(&self, username: &str) -> Result<Option<UserRecord>, AccessError> {
        let key = user_key(username);
        match self.store.get(&key).await? {
            Some(v) => Ok(Some(from_json(&key, &v.value)?)),
            None => Ok(None),
        }
    }

    pub async fn users(&self) -> Result<Vec<UserRecord>, AccessError> {
        self.list(USER_PREFIX).await
    }

    pub async fn scopes(&self) -> Result<Vec<ScopeRecord>, AccessError> {
        self.list(SCOPE_PREFIX).await
    }

    /// The scopes that name `username`, as token scopes.
    pub async fn scopes_of(&self, username: &str) -> Result<Vec<Scope>, AccessError> {
        Ok(self
            .scopes()
            .await?
            .into_iter()
            .filter(|s| s.usernames.iter().any(|u| u == username))
            .map(|s| {
                let mode = match s.mode {
                    config::AccessMode::Read => AccessMode::Read,
                    config::AccessMode::ReadWrite => AccessMode::ReadWrite,
                };
                Scope::new(s.export_name, &s.prefix, mode)
            })
            .collect())
    }

    /// Creates a user.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        manager: bool,
    ) -> Result<(), AccessError> {
        validate_credential("username", username)?;
        if username.contains(':') {
            return Err(AccessError::Invalid("username must not contain `:`".into()));
        }
        validate_credential("password", password)?;
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccessError::Hash(e.to_string()))??;
        let record = UserRecord {
            username: username.to_string(),
            password_hash: hash,
            can_manage_users: manager,
            must_change_password: false,
        };
        match self
            .store
            .compare_and_swap(&user_key(username), None, Some(to_json(&record)))
            .await?
        {
            CasOutcome::Swapped { .. } => Ok(()),
            CasOutcome::Conflict { .. } => Err(AccessError::UserExists(username.to_string())),
        }
    }

    /// Sets a new password (clears the must-change flag).
    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), AccessError> {
        validate_credential("password", password)?;
        let key = user_key(username);
        let password = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| AccessError::Hash(e.to_string()))??;
        loop {
            let Some(current) = self.store.get(&key).await? else {
                return Err(AccessError::NoSuchUser(username.to_string()));
            };
            let mut record: UserRecord = from_json(&key, &current.value)?;
            record.password_hash = hash.clone();
            record.must_change_password = false;
            let outcome = self
                .store
                .compare_and_swap(&key, Some(current.version), Some(to_json(&record)))
                .await?;
            if let CasOutcome::Swapped { .. } = outcome {
                return Ok(());
            }
        }
    }

    /// Deletes a user and removes it from every scope.
    pub async fn delete_user(&self, username: &str) -> Result<(), AccessError> {
        if !self.store.delete(&user_key(username)).await? {
            return Err(AccessError::NoSuchUser(username.to_string()));
        }
        for mut scope in self.scopes().await? {
            if scope.usernames.iter().any(|u| u == username) {
                scope.usernames.retain(|u| u != username);
                if scope.usernames.is_empty() {
                    self.store.delete(&scope.key()).await?;
                } else {
                    self.store.put(&scope.key(), to_json(&scope)).await?;
                }
            }
        }
        Ok(())
    }

    /// Creates or replaces a scope.
    pub async fn put_scope(&self, scope: ScopeRecord) -> Result<(), AccessError> {
        let mut scope = scope;
        scope.prefix = scope.prefix.trim_matches('/').to_string();
        for name in &scope.usernames {
            if self.user(name).await?.is_none() {
                return Err(AccessError::NoSuchUser(name.clone()));
            }
        }
        if scope.usernames.is_empty() {
            return Err(AccessError::Invalid(
                "a scope must name at least one user".into(),
            ));
        }
        self.store.put(&scope.key(), to_json(&scope)).await?;
        Ok(())
    }

    /// Deletes a scope; `true` if it existed.
    pub async fn delete_scope(
        &self,
        export: &str,
        prefix: &str,
        mode: config::AccessMode,
    ) -> Result<bool, AccessError> {
        Ok(self.store.delete(&scope_key(export, prefix, mode)).await?)
    }

    async fn list<T: for<'de> Deserialize<'de>>(
        &self,
        prefix: &str,
    ) -> Result<Vec<T>, AccessError> {
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .store
                .list_prefix(prefix.as_bytes(), after.as_deref(), PAGE)
                .await?;
            let done = page.len() < PAGE;
            for (key, value) in &page {
                out.push(from_json(key, &value.value)?);
            }
            match page.last() {
                Some((key, _)) if !done => after = Some(key.clone()),
                _ => return Ok(out),
            }
        }
    }
}

fn validate_credential(what: &str, value: &str) -> Result<(), AccessError> {
    if value.is_empty() || value.trim() != value {
        return Err(AccessError::Invalid(format!(
            "{what} must be non-empty without surrounding whitespace"
        )));
    }
    Ok(())
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn from_json<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, AccessError> {
    serde_json::from_slice(bytes).map_err(|e| AccessError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: e.to_string(),
    })
}
