//! Profile parsing: `sysctl.conf(5)` syntax plus comparison markers in comments.

use crate::TuneError;

/// The shipped profiles, embedded from `kernel-tuning/` at compile time: `(name, text)`.
pub const EMBEDDED_PROFILES: &[(&str, &str)] = &[
    ("core", include_str!("../../../kernel-tuning/core.conf")),
    (
        "replicant",
        include_str!("../../../kernel-tuning/replicant.conf"),
    ),
];

/// Marker in the comment block right above a key: a higher running value is also fine.
const MARK_AT_LEAST: &str = "[at least]";
/// Marker in the comment block right above a key: a two-field range (`low high`); any running
/// range containing the profile's is fine.
const MARK_RANGE: &str = "[range]";

/// How a running value is compared with the profile's value.
///
/// Multi-field values (e.g. `net.ipv4.tcp_rmem = 4096 16384 16777216`) are compared field by
/// field; a value with any non-numeric field is compared as a string (whitespace-normalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Every field must be equal (the default for keys without a marker).
    Exact,
    /// Every running field must be greater than or equal to the profile's field (comment
    /// marker `[at least]`): used for limits and queue sizes, where a host tuned higher than
    /// Halyard asks for is not a deviation.
    AtLeast,
    /// The running `low high` range must contain the profile's (comment marker `[range]`):
    /// used for `net.ipv4.ip_local_port_range`.
    RangeContains,
}

/// One `key = value` line of a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Dotted sysctl name, e.g. `net.core.somaxconn` (slashes are normalised to dots).
    pub key: String,
    /// The value with fields separated by one space.
    pub value: String,
    /// Line prefixed with `-`: a key missing from the running kernel is not a deviation and is
    /// skipped by `apply`.
    pub optional: bool,
    /// How the running value is compared with `value`.
    pub compare: Compare,
    /// 1-based line number in the profile text.
    pub line: usize,
}

impl Entry {
    /// Path of this key relative to `/proc/sys`.
    pub fn relative_path(&self) -> String {
        self.key.replace('.', "/")
    }
}

/// A parsed profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Profile name (`core`, `replicant`) or the file it was read from.
    pub name: String,
    /// Entries in file order; a key set twice keeps its last value (as sysctl(8) does).
    pub entries: Vec<Entry>,
}

impl Profile {
    /// Parses profile text. `name` is used in error messages and as [`Profile::name`].
    pub fn parse(name: &str, text: &str) -> Result<Profile, TuneError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut comment_marks: Option<Compare> = None;
        for (idx, raw) in text.lines().enumerate() {
            let line_no = idx + 1;
            let line = raw.trim();
            if line.is_empty() {
                comment_marks = None;
                continue;
            }
            if let Some(comment) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
                if comment.contains(MARK_AT_LEAST) {
                    comment_marks = Some(Compare::AtLeast);
                } else if comment.contains(MARK_RANGE) {
                    comment_marks = Some(Compare::RangeContains);
                }
                continue;
            }
            let err = |reason: &str| TuneError::Parse {
                source_name: name.to_string(),
                line: line_no,
                reason: reason.to_string(),
            };
            let (optional, body) = match line.strip_prefix('-') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, line),
            };
            let (key, value) = body
                .split_once('=')
                .ok_or_else(|| err("expected `key = value`"))?;
            let key = key.trim().replace('/', ".");
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            if key.is_empty() {
                return Err(err("empty key"));
            }
            if value.is_empty() {
                return Err(err("empty value"));
            }
            if key.contains("..")
                || key.starts_with('.')
                || key.ends_with('.')
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(err("invalid key"));
            }
            let compare = comment_marks.take().unwrap_or(Compare::Exact);
            if compare == Compare::RangeContains && value.split(' ').count() != 2 {
                return Err(err("a [range] key needs exactly two fields"));
            }
            let entry = Entry {
                key,
                value,
                optional,
                compare,
                line: line_no,
            };
            match entries.iter_mut().find(|e| e.key == entry.key) {
                Some(existing) => *existing = entry,
                None => entries.push(entry),
            }
        }
        Ok(Profile {
            name: name.to_string(),
            entries,
        })
    }

    /// One of the embedded profiles by name (`core`, `replicant`).
    pub fn embedded(name: &str) -> Result<Profile, TuneError> {
        let (_, text) = EMBEDDED_PROFILES
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| TuneError::UnknownProfile(name.to_string()))?;
        Profile::parse(name, text)
    }

    /// Reads and parses a profile file.
    pub fn from_file(path: &std::path::Path) -> Result<Profile, TuneError> {
        let text = std::fs::read_to_string(path).map_err(|source| TuneError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Profile::parse(&path.display().to_string(), &text)
    }

    /// The entry for `key`, if the profile sets it.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_values_markers_and_optional() {
        let text = "# header\n\n# [at least] why\nnet.core.somaxconn = 65535\n\
                    ; plain comment\nnet/ipv4/tcp_rmem=4096\t16384   6291456\n\
                    # [range] ports\nnet.ipv4.ip_local_port_range = 10240 65535\n\
                    -net.netfilter.nf_conntrack_max = 10\n";
        let p = Profile::parse("t", text).unwrap();
        assert_eq!(p.entries.len(), 4);
        let s = p.get("net.core.somaxconn").unwrap();
        assert_eq!(
            (s.value.as_str(), s.compare, s.line),
            ("65535", Compare::AtLeast, 4)
        );
        let r = p.get("net.ipv4.tcp_rmem").unwrap();
        assert_eq!(r.value, "4096 16384 6291456");
        assert_eq!(r.compare, Compare::Exact);
        assert_eq!(r.relative_path(), "net/ipv4/tcp_rmem");
        let range = p.get("net.ipv4.ip_local_port_range").unwrap();
        assert_eq!(range.compare, Compare::RangeContains);
        let ct = p.get("net.netfilter.nf_conntrack_max").unwrap();
        assert!(ct.optional);
        assert_eq!(ct.compare, Compare::Exact);
    }

    #[test]
    fn marker_applies_only_to_the_next_key() {
        let p = Profile::parse("t", "# [at least]\na.b = 1\nc.d = 2\n").unwrap();
        assert_eq!(p.get("a.b").unwrap().compare, Compare::AtLeast);
        assert_eq!(p.get("c.d").unwrap().compare, Compare::Exact);
        let p = Profile::parse("t", "# [at least]\n\na.b = 1\n").unwrap();
        assert_eq!(p.get("a.b").unwrap().compare, Compare::Exact);
    }

    #[test]
    fn last_value_wins() {
        let p = Profile::parse("t", "a.b = 1\na.b = 2\n").unwrap();
        assert_eq!(p.entries.len(), 1);
        assert_eq!(p.entries[0].value, "2");
    }

    #[test]
    fn rejects_malformed_lines_with_line_numbers() {
        for (text, line) in [
            ("a.b = 1\nnot a pair\n", 2),
            ("= 3\n", 1),
            ("a.b =\n", 1),
            ("a..b = 1\n", 1),
            ("../etc/passwd = 1\n", 1),
            ("# [range]\nnet.ipv4.ip_local_port_range = 1\n", 2),
        ] {
            match Profile::parse("bad", text) {
                Err(TuneError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: expected parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn embedded_profiles_parse_and_document_every_value() {
        for (name, text) in EMBEDDED_PROFILES {
            let p = Profile::embedded(name).unwrap();
            assert!(
                p.entries.len() >= 20,
                "{name} has {} entries",
                p.entries.len()
            );
            // Every key line is directly preceded by a comment line saying why.
            let lines: Vec<&str> = text.lines().collect();
            for e in &p.entries {
                let above = lines[e.line - 2].trim();
                assert!(
                    above.starts_with('#'),
                    "{name}:{} {} has no comment",
                    e.line,
                    e.key
                );
            }
            for key in [
                "net.core.somaxconn",
                "fs.nr_open",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_tw_reuse",
                "vm.swappiness",
            ] {
                assert!(p.get(key).is_some(), "{name} lacks {key}");
            }
            assert_eq!(
                p.get("net.ipv4.ip_local_port_range").unwrap().compare,
                Compare::RangeContains
            );
            assert_eq!(
                p.get("net.core.somaxconn").unwrap().compare,
                Compare::AtLeast
            );
        }
        assert!(matches!(
            Profile::embedded("edge"),
            Err(TuneError::UnknownProfile(n)) if n == "edge"
        ));
    }

    #[test]
    fn nr_open_is_above_the_nofile_limit() {
        let limits = include_str!("../../../kernel-tuning/limits.conf");
        let nofile: Vec<u64> = limits
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[2] == "nofile").then(|| f[3].parse().unwrap())
            })
            .collect();
        assert_eq!(nofile.len(), 4);
        for (name, _) in EMBEDDED_PROFILES {
            let p = Profile::embedded(name).unwrap();
            let nr_open: u64 = p.get("fs.nr_open").unwrap().value.parse().unwrap();
            for n in &nofile {
                assert!(
                    *n >= 1_048_576 && *n <= nr_open,
                    "{name}: nofile {n} nr_open {nr_open}"
                );
            }
        }
    }
}
