//! Configuration errors that name the file, the field, the value and the line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one service file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The field, when the problem is in one (`after`, `signal.stop`, ...).
    pub field: Option<String>,
    /// The offending value as written, when there is one.
    pub value: Option<String>,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, for a person.
    pub message: String,
}

impl ConfigError {
    /// A problem with the file as a whole.
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            field: None,
            value: None,
            line: None,
            message: message.into(),
        }
    }

    /// A problem with one field's value.
    pub fn field(
        file: &Path,
        field: impl Into<String>,
        value: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.to_path_buf(),
            field: Some(field.into()),
            value,
            line: None,
            message: message.into(),
        }
    }

    /// Sets the line.
    pub fn at_line(mut self, line: Option<usize>) -> Self {
        self.line = line;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`")?;
            if let Some(value) = &self.value {
                write!(f, " = {value}")?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);
