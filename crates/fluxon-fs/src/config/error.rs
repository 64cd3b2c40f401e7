//! Errors from loading and validating config files: read errors, YAML/serde errors with the
//! line and column serde_yaml reports, and validation problems that name the key path.

use std::fmt;

/// One validation problem: the dotted key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationIssue {
    /// Dotted key path, e.g. `fluxon_fs.cache.exports.data.remote_root_dir_abs`.
    pub key_path: String,
    /// What is wrong, e.g. `must be an absolute path`.
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key_path, self.message)
    }
}

/// Every validation problem found in one config, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationIssue>);

impl ValidationErrors {
    /// Records that `key_path` `message` (e.g. "must be an absolute path").
    pub fn push(&mut self, key_path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationIssue {
            key_path: key_path.into(),
            message: message.into(),
        });
    }

    /// `Ok(())` when nothing was recorded, otherwise `Err(self)`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// The recorded issues.
    pub fn issues(&self) -> &[ValidationIssue] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Why a config could not be loaded. Every variant starts with the origin (file path or the
/// caller's label for a YAML string).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{origin}: cannot read config file: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not match the expected shape (unknown key, wrong type,
    /// missing required key). `message` is serde_yaml's text, which names the key path and,
    /// when known, the line and column.
    #[error("{origin}: {message}")]
    Parse {
        origin: String,
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// The YAML parsed but some values are not acceptable.
    #[error("{origin}: {errors}")]
    Invalid {
        origin: String,
        errors: ValidationErrors,
    },
}

impl ConfigError {
    /// Wraps a serde_yaml error, keeping its location.
    pub(crate) fn parse(origin: &str, err: &serde_yaml::Error) -> Self {
        let location = err.location();
        let mut message = err.to_string();
        if let Some(loc) = &location {
            let suffix = format!("at line {} column {}", loc.line(), loc.column());
            if !message.contains(&suffix) {
                message = format!("{message} {suffix}");
            }
        }
        ConfigError::Parse {
            origin: origin.to_string(),
            message,
            line: location.as_ref().map(serde_yaml::Location::line),
            column: location.as_ref().map(serde_yaml::Location::column),
        }
    }

    /// Wraps validation problems.
    pub(crate) fn invalid(origin: &str, errors: ValidationErrors) -> Self {
        ConfigError::Invalid {
            origin: origin.to_string(),
            errors,
        }
    }
}
