//! Problems found in data files and where they are.
//!
//! A [`Violation`] prints as ``FILE:LINE: field `x`: what is wrong: how to fix it``, the format
//! that editors and CI logs turn into links.

use std::fmt;
use std::path::PathBuf;

/// Kind of a problem, used to group the summary and to sort problems within one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// The line is not one JSON value, is not valid UTF-8, or is blank.
    InvalidJson,
    /// A field is missing, unknown, repeated, of the wrong type, or empty.
    Schema,
    /// A category, intent, urgency, speaker or tag that is not in the scheme.
    UnknownLabel,
    /// The category list breaks a rule: empty, too long, repeated entry, or `none` with others.
    CategoryList,
    DuplicateId,
    DuplicateText,
    NearDuplicate,
}

impl ProblemKind {
    pub const ALL: [ProblemKind; 7] = [
        ProblemKind::InvalidJson,
        ProblemKind::Schema,
        ProblemKind::UnknownLabel,
        ProblemKind::CategoryList,
        ProblemKind::DuplicateId,
        ProblemKind::DuplicateText,
        ProblemKind::NearDuplicate,
    ];

    /// Name of the kind in the summary.
    pub fn description(self) -> &'static str {
        match self {
            ProblemKind::InvalidJson => "invalid JSON",
            ProblemKind::Schema => "schema",
            ProblemKind::UnknownLabel => "label not in the scheme",
            ProblemKind::CategoryList => "category list",
            ProblemKind::DuplicateId => "duplicate id",
            ProblemKind::DuplicateText => "duplicate text",
            ProblemKind::NearDuplicate => "near-duplicate",
        }
    }
}

/// One problem of one line, without its location.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The JSON field at fault, or `None` when the whole line is (invalid JSON, not an object).
    pub field: Option<String>,
    /// Description of the fault and of its fix.
    pub message: String,
}

impl Problem {
    pub fn in_field(kind: ProblemKind, field: &str, message: impl Into<String>) -> Problem {
        Problem { kind, field: Some(field.to_string()), message: message.into() }
    }

    pub fn in_line(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem { kind, field: None, message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A line of a data file, counted from 1.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// A problem at a location.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub location: Location,
    pub problem: Problem,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_display_names_file_line_and_field() {
        let violation = Violation {
            location: Location { path: PathBuf::from("eval/testset.jsonl"), line: 7 },
            problem: Problem::in_field(ProblemKind::Schema, "text", "empty: write the message"),
        };
        assert_eq!(violation.to_string(), "eval/testset.jsonl:7: field `text`: empty: write the message");
    }

    #[test]
    fn line_problem_display_has_no_field() {
        let problem = Problem::in_line(ProblemKind::InvalidJson, "blank line: remove it");
        assert_eq!(problem.to_string(), "blank line: remove it");
    }
}
