//! Serde helpers for configuration values that arrive either from TOML or from environment
//! variables (where every value starts life as a string).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A socket address (`"127.0.0.1:1883"`, `"[::1]:1883"`), with an error message that shows
/// the expected form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr(pub SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<SocketAddr>()
            .map(Addr)
            .map_err(|_| format!("expected an address like \"127.0.0.1:1883\", got {s:?}"))
    }
}

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = toml::Value::deserialize(d)?;
        match raw.as_str() {
            Some(s) => s.parse().map_err(serde::de::Error::custom),
            None => Err(serde::de::Error::custom(format!(
                "expected an address like \"127.0.0.1:1883\", got {raw}"
            ))),
        }
    }
}

/// Deserialises a string field that also accepts any TOML scalar (an environment override
/// such as `HALYARD_NODE__NAME=42` parses as an integer first).
pub fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(s),
        v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)) => {
            Ok(v.to_string())
        }
        other => Err(serde::de::Error::custom(format!(
            "expected a string, got {other}"
        ))),
    }
}

/// Deserialises a list of strings given either as a TOML array or as one comma-separated
/// string (the form environment overrides use). For list-valued fields of later sections.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(String::from)
            .collect()),
        toml::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "expected a list of strings, got element {other}"
                ))),
            })
            .collect(),
        other => Err(serde::de::Error::custom(format!(
            "expected a list of strings or a comma-separated string, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Lists {
        #[serde(deserialize_with = "string_list")]
        items: Vec<String>,
    }

    #[test]
    fn list_from_comma_separated_string() {
        let l: Lists = toml::from_str("items = \"a, b,c\"").unwrap();
        assert_eq!(l.items, ["a", "b", "c"]);
        let l: Lists = toml::from_str("items = [\"x\"]").unwrap();
        assert_eq!(l.items, ["x"]);
        assert!(toml::from_str::<Lists>("items = 3").is_err());
    }

    #[test]
    fn addr_error_names_the_expected_form() {
        let err = "nope".parse::<Addr>().unwrap_err();
        assert!(err.contains("127.0.0.1:1883"), "{err}");
    }
}
