//! `fluxon_fs.master_panel.bootstrap_access_model`: the users and scopes written into an empty
//! access DB at first start.
//!
//! ```yaml
//! bootstrap_access_model:
//!   users:
//!     - username: admin
//!       password: admin            # a Secret: never shown by Debug
//!       can_manage_users: true     # optional, default false
//!   scope_access:                  # optional, default []
//!     - export_name: demo-export
//!       prefix: "docs/"            # optional, default "" = whole export
//!       mode: read                 # read | read_write
//!       usernames: [alice]
//! ```
//!
//! Scopes are a sibling of `users` (as upstream), not nested per user. Scope export names are
//! not checked against `fluxon_fs.cache.exports`: agents register exports at runtime.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::checks::{self, record};
use super::{Secret, ValidationErrors};

/// The bootstrap access model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAccessModel {
    pub users: Vec<BootstrapUser>,
    #[serde(default)]
    pub scope_access: Vec<ScopeAccess>,
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapUser {
    pub username: String,
    pub password: Secret,
    /// Managers administer users and scopes and may access every export.
    #[serde(default)]
    pub can_manage_users: bool,
}

/// Access granted by a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// List and read.
    Read,
    /// List, read, write, delete, rename.
    ReadWrite,
}

/// One scope: `mode` access to `prefix` inside `export_name` for `usernames`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeAccess {
    pub export_name: String,
    #[serde(default)]
    pub prefix: String,
    pub mode: AccessMode,
    pub usernames: Vec<String>,
}

impl BootstrapAccessModel {
    /// Checks users and scopes; `path` is the model's key path.
    pub fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        let users_path = format!("{path}.users");
        if self.users.is_empty() {
            errors.push(&users_path, "must list at least one user");
        } else if !self.users.iter().any(|u| u.can_manage_users) {
            errors.push(
                &users_path,
                "must contain at least one user with can_manage_users: true",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let user_path = format!("{users_path}[{i}]");
            user.validate_into(&user_path, errors);
            if !seen.insert(user.username.as_str()) {
                errors.push(
                    format!("{user_path}.username"),
                    format!("duplicates `{}`", user.username),
                );
            }
        }
        self.validate_scopes(&seen, &format!("{path}.scope_access"), errors);
    }

    fn validate_scopes(&self, known: &BTreeSet<&str>, path: &str, errors: &mut ValidationErrors) {
        let mut seen = BTreeSet::new();
        for (i, scope) in self.scope_access.iter().enumerate() {
            let scope_path = format!("{path}[{i}]");
            scope.validate_into(known, &scope_path, errors);
            let key = (&scope.export_name, &scope.prefix, scope.mode);
            if !seen.insert(key) {
                errors.push(
                    scope_path,
                    "duplicates an earlier scope with the same export_name, prefix and mode",
                );
            }
        }
    }
}

impl BootstrapUser {
    fn validate_into(&self, path: &str, errors: &mut ValidationErrors) {
        record(errors, format!("{path}.username"), username(&self.username));
        record(
            errors,
            format!("{path}.password"),
            password(self.password.expose()),
        );
    }
}

impl ScopeAccess {
    fn validate_into(&self, known: &BTreeSet<&str>, path: &str, errors: &mut ValidationErrors) {
        record(
            errors,
            format!("{path}.export_name"),
            checks::export_name(&self.export_name),
        );
        record(
            errors,
            format!("{path}.prefix"),
            checks::scope_prefix(&self.prefix),
        );
        let users_path = format!("{path}.usernames");
        if self.usernames.is_empty() {
            errors.push(&users_path, "must name at least one user");
        }
        for (i, name) in self.usernames.iter().enumerate() {
            if !known.contains(name.as_str()) {
                errors.push(
                    format!("{users_path}[{i}]"),
                    format!("names unknown user `{name}`"),
                );
            }
        }
    }
}

/// Usernames: non-empty, no surrounding whitespace, no `:` (HTTP Basic auth).
fn username(value: &str) -> Result<(), String> {
    checks::identifier(value)?;
    if value.contains(':') || value.chars().any(char::is_control) {
        return Err("must not contain `:` or control characters".into());
    }
    Ok(())
}

/// Passwords: non-empty, no surrounding whitespace. The value is never put in the message.
fn password(value: &str) -> Result<(), String> {
    checks::identifier(value)
}
