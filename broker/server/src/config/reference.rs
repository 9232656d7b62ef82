//! The configuration reference, generated from the documented embedded `default.toml`.
//!
//! Every key in `default.toml` is preceded by `# doc` lines; `halyard config reference` prints
//! them as a Markdown table and `broker/server/CONFIG.md` holds the same text (a test keeps the
//! two in sync and checks that every key of [`super::Config`] is documented).

use super::DEFAULT_TOML;

/// One documented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Dotted key, e.g. `io.backend`.
    pub key: String,
    /// Default value as written in TOML.
    pub default: String,
    /// The documentation lines joined by spaces.
    pub doc: String,
    /// The environment variable that overrides it.
    pub env: String,
}

/// Every key of the embedded default file, in file order.
pub fn entries() -> Vec<Entry> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut doc: Vec<&str> = Vec::new();
    for line in DEFAULT_TOML.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header.trim().to_string();
            doc.clear();
        } else if let Some(comment) = line.strip_prefix('#') {
            doc.push(comment.trim());
        } else if let Some((key, value)) = line.split_once('=') {
            let key = format!("{section}.{}", key.trim());
            let env = format!(
                "{}{}",
                super::ENV_PREFIX,
                key.replace('.', "__").to_ascii_uppercase()
            );
            out.push(Entry {
                key,
                default: value.trim().to_string(),
                doc: doc.join(" "),
                env,
            });
            doc.clear();
        } else {
            doc.clear();
        }
    }
    out
}

/// The reference as Markdown (the content of `CONFIG.md`).
pub fn markdown() -> String {
    let mut s = String::from(
        "# Halyard configuration reference\n\n\
         Generated from `broker/server/default.toml` by `halyard config reference`; \
         a test keeps this file in sync.\n\n\
         Every key can be overridden by the environment variable shown \
         (`__` separates levels; list values are comma-separated).\n\
         Optional keys, unset by default: `auth.password_file`, `acl.file`, `admin.token`.\n\n\
         Optional listeners, absent by default (see the commented block in `default.toml`): \
         `[listeners.tls]` (`bind`, `cert`, `key`, optional `ca` to require client certificates \
         (mTLS), `use_identity_as_username`, `backlog`), `[listeners.ws]` (`bind`, `backlog`; \
         subprotocol `mqtt`) and `[listeners.wss]` (the keys of `[listeners.tls]`). Environment \
         overrides work for them too, e.g. `HALYARD_LISTENERS__TLS__BIND`; certificates and keys \
         are reloaded on SIGHUP.\n\n\
         | key | default | environment | description |\n|---|---|---|---|\n",
    );
    for e in entries() {
        s.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} |\n",
            e.key,
            e.default,
            e.env,
            e.doc.replace('|', "\\|")
        ));
    }
    s
}
