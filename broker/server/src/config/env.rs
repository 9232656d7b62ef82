//! Environment overrides: `HALYARD_<SECTION>__<KEY>` sets `section.key` in the value tree.
//!
//! Levels are separated by `__` and lower-cased (`HALYARD_LISTENERS__TCP__BIND` sets
//! `listeners.tcp.bind`); single underscores stay part of a key (`HALYARD_LIMITS__MAX_CONNECTIONS`).
//! A value is read as a TOML scalar when it parses as one (`8`, `true`, `"x"`, `[1, 2]`), else as
//! a plain string; list-valued keys also accept a comma-separated string. Variables with the
//! prefix but no `__` (such as `HALYARD_BIN` set by a test harness) are not configuration and are
//! ignored.

use super::{ConfigError, ENV_PREFIX};

/// Applies every `HALYARD_*__*` variable in `env` onto `value`, creating missing tables.
/// Variables are applied in sorted order so the result does not depend on the environment's order.
pub fn apply_env_overrides(
    value: &mut toml::Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut overrides: Vec<(Vec<String>, String, String)> = env
        .into_iter()
        .filter_map(|(name, raw)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            if !rest.contains("__") {
                return None;
            }
            let path = rest.split("__").map(str::to_ascii_lowercase).collect();
            Some((path, raw, name))
        })
        .collect();
    overrides.sort();
    for (path, raw, name) in overrides {
        set_path(value, &path, parse_scalar(&raw), &name)?;
    }
    Ok(())
}

/// Reads an environment value as TOML when it is a valid TOML value, else as a string.
fn parse_scalar(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut table) => match table.remove("v") {
            Some(toml::Value::Table(_)) | None => toml::Value::String(raw.to_string()),
            Some(v) => v,
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(
    root: &mut toml::Value,
    path: &[String],
    leaf: toml::Value,
    var: &str,
) -> Result<(), ConfigError> {
    let dotted = path.join(".");
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Invalid {
            key: dotted,
            message: format!("environment variable {var} has an empty level"),
        });
    }
    let mut node = root;
    for (depth, segment) in path.iter().enumerate() {
        let toml::Value::Table(table) = node else {
            return Err(ConfigError::Invalid {
                key: path[..depth].join("."),
                message: format!("is not a table, so {var} cannot set a key inside it"),
            });
        };
        if depth + 1 == path.len() {
            table.insert(segment.clone(), leaf);
            return Ok(());
        }
        node = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sets_nested_keys_and_creates_tables() {
        let mut v: toml::Value = toml::from_str("[io]\nthreads = 1").unwrap();
        apply_env_overrides(
            &mut v,
            env(&[
                ("HALYARD_IO__THREADS", "4"),
                ("HALYARD_LISTENERS__TCP__BIND", "127.0.0.1:18831"),
                ("HALYARD_LIMITS__MAX_CONNECTIONS", "7"),
                ("HALYARD_BIN", "/ignored"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(v["io"]["threads"].as_integer(), Some(4));
        assert_eq!(
            v["listeners"]["tcp"]["bind"].as_str(),
            Some("127.0.0.1:18831")
        );
        assert_eq!(v["limits"]["max_connections"].as_integer(), Some(7));
        assert!(v.get("bin").is_none());
    }

    #[test]
    fn scalars_parse_as_toml_else_string() {
        assert_eq!(parse_scalar("true"), toml::Value::Boolean(true));
        assert_eq!(parse_scalar("12"), toml::Value::Integer(12));
        assert_eq!(parse_scalar("epoll"), toml::Value::String("epoll".into()));
        assert_eq!(parse_scalar("a,b"), toml::Value::String("a,b".into()));
        assert!(parse_scalar("[1, 2]").is_array());
    }

    #[test]
    fn setting_inside_a_scalar_fails_with_the_key() {
        let mut v: toml::Value = toml::from_str("[io]\nthreads = 1").unwrap();
        let err = apply_env_overrides(&mut v, env(&[("HALYARD_IO__THREADS__X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("io.threads"), "{err}");
    }
}
