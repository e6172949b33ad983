//! What a `container/exec` names: a container and the argv and environment to run.
//! (Which argv may run is the exec policy's decision, not these types'.)
//!
//! Imports nothing outside `domain`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{argv_safe, printable, quote, FieldError};

/// A container name as Docker allows it: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

impl ContainerName {
    /// The name, if Docker would accept it.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            return Err(FieldError(format!(
                "container must be a container name ([A-Za-z0-9][A-Za-z0-9_.-]*), got {}",
                quote(s)
            )));
        }
        Ok(Self(s.to_string()))
    }
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::string_newtype_conversions!(ContainerName);

/// An exec argv: 1 to 64 arguments, each printable and at most 4096 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ExecArgv(Vec<String>);

impl ExecArgv {
    /// The arguments, in order; the first is the program.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for ExecArgv {
    type Error = FieldError;
    fn try_from(v: Vec<String>) -> Result<Self, FieldError> {
        if v.is_empty()
            || v.len() > 64
            || v.iter().any(|a| a.len() > 4096 || !printable(a))
            || !argv_safe(&v[0])
            || v[0].is_empty()
        {
            return Err(FieldError(
                "command must be a list of 1 to 64 printable arguments whose first is a program, not an option (an argv, not a shell line)"
                    .into(),
            ));
        }
        Ok(Self(v))
    }
}

impl From<ExecArgv> for Vec<String> {
    fn from(a: ExecArgv) -> Vec<String> {
        a.0
    }
}

/// The environment of an exec: at most 64 variables, names `[A-Za-z_][A-Za-z0-9_]{0,127}`,
/// values printable and at most 4096 characters. Docker receives `NAME=value`
/// strings, so a `=` or NUL in a name would set a different variable.
pub fn exec_env<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let env = BTreeMap::<String, String>::deserialize(d)?;
    let name_ok = |n: &str| {
        n.len() <= 128
            && n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if env.len() > 64
        || env
            .iter()
            .any(|(k, v)| !name_ok(k) || v.len() > 4096 || !printable(v))
    {
        return Err(serde::de::Error::custom(
            "env must map at most 64 names [A-Za-z_][A-Za-z0-9_]* to printable values",
        ));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_and_argv() {
        assert!(ContainerName::parse("nextcloud-aio-nextcloud").is_ok());
        assert!(ContainerName::parse("../x").is_err());
        assert!(ExecArgv::try_from(vec!["/bin/true".to_string()]).is_ok());
        assert!(ExecArgv::try_from(vec![]).is_err());
        assert!(ExecArgv::try_from(vec!["-x".to_string()]).is_err());
    }
}
