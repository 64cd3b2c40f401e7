//! Scope rules: what an identity may do on an export-relative path.
//!
//! A scope grants `read` or `read_write` on a prefix of one export ('' = the whole export,
//! `docs/` = the directory `docs` and everything below it). Managers may do everything on every
//! export. Directories on the way down to a scope are "browsable": they can be stat'ed and
//! listed, and a listing shows only children that are readable or lead to a scope.

use serde::{Deserialize, Serialize};

/// Access granted by a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AccessMode {
    Read,
    ReadWrite,
}

/// One scope of an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub export: String,
    /// Normalised: '' or `dir/sub` (no trailing '/').
    pub prefix: String,
    pub mode: AccessMode,
}

impl Scope {
    /// Builds a scope, normalising the prefix (`docs/` and `docs` mean the same).
    pub fn new(export: impl Into<String>, prefix: &str, mode: AccessMode) -> Scope {
        Scope {
            export: export.into(),
            prefix: prefix.trim_matches('/').to_string(),
            mode,
        }
    }

    /// The scope covers `path` (the prefix itself or anything below it).
    pub fn covers(&self, export: &str, path: &str) -> bool {
        self.export == export && is_within(&self.prefix, path)
    }

    /// `path` is a strict ancestor directory of the scope's prefix.
    pub fn leads_to(&self, export: &str, path: &str) -> bool {
        self.export == export
            && !self.prefix.is_empty()
            && (path.is_empty()
                || (self.prefix.len() > path.len()
                    && self.prefix.starts_with(path)
                    && self.prefix.as_bytes()[path.len()] == b'/'))
    }
}

/// `path` equals `prefix` or lies below it ('' prefix covers everything).
pub fn is_within(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.len() > prefix.len()
            && path.starts_with(prefix)
            && path.as_bytes()[prefix.len()] == b'/')
}

/// The access rights of one identity.
pub trait Grants {
    fn is_manager(&self) -> bool;
    fn scopes(&self) -> &[Scope];

    /// May read (stat, open for reading, read) `path`.
    fn can_read(&self, export: &str, path: &str) -> bool {
        self.is_manager() || self.scopes().iter().any(|s| s.covers(export, path))
    }

    /// May create, modify or delete `path`.
    fn can_write(&self, export: &str, path: &str) -> bool {
        self.is_manager()
            || self
                .scopes()
                .iter()
                .any(|s| s.mode == AccessMode::ReadWrite && s.covers(export, path))
    }

    /// May stat or list `path` because it is readable or a directory leading to a scope.
    fn can_browse(&self, export: &str, path: &str) -> bool {
        self.can_read(export, path) || self.scopes().iter().any(|s| s.leads_to(export, path))
    }

    /// Sees the export at all.
    fn sees_export(&self, export: &str) -> bool {
        self.is_manager() || self.scopes().iter().any(|s| s.export == export)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct G(bool, Vec<Scope>);
    impl Grants for G {
        fn is_manager(&self) -> bool {
            self.0
        }
        fn scopes(&self) -> &[Scope] {
            &self.1
        }
    }

    #[test]
    fn prefix_rules() {
        let g = G(
            false,
            vec![
                Scope::new("e", "docs/", AccessMode::Read),
                Scope::new("e", "tmp/w", AccessMode::ReadWrite),
            ],
        );
        assert!(g.can_read("e", "docs"));
        assert!(g.can_read("e", "docs/a/b"));
        assert!(!g.can_read("e", "docsx"));
        assert!(!g.can_read("e", ""));
        assert!(!g.can_write("e", "docs/a"));
        assert!(g.can_write("e", "tmp/w/x"));
        assert!(!g.can_write("e", "tmp/wx"));
        assert!(g.can_browse("e", ""));
        assert!(g.can_browse("e", "tmp"));
        assert!(!g.can_browse("e", "other"));
        assert!(!g.can_read("f", "docs"));
        assert!(g.sees_export("e") && !g.sees_export("f"));
    }

    #[test]
    fn whole_export_and_manager() {
        let g = G(false, vec![Scope::new("e", "", AccessMode::Read)]);
        assert!(g.can_read("e", "") && g.can_read("e", "x/y"));
        assert!(!g.can_write("e", "x"));
        let m = G(true, vec![]);
        assert!(m.can_write("any", "x") && m.sees_export("any"));
    }
}
