//! Splitting topic names and filters into levels on the publish path.

/// The levels of a topic name or filter, split at '/', empty levels included (`"a//b"` has
/// three, `""` one): what `str::split('/')` yields. `str::split` with a `char` searches with
/// `memchr` and then compares the found bytes with a `memcmp` call, two library calls per
/// level; a topic's levels are a few bytes long, so a plain byte loop is cheaper. The trie
/// walk splits every PUBLISH's topic with it (that split and the name check's, now a byte
/// loop of its own in `validate.rs`, took ~6 % of the broker's samples in closed-loop QoS 1
/// fan-in: benches/RESULTS.md, session 10). '/' is ASCII, so it never occurs inside a
/// multi-byte UTF-8 sequence and every split point is a character boundary.
#[derive(Debug, Clone)]
pub(crate) struct Levels<'a> {
    /// What is left to split; `None` once the last level was returned.
    rest: Option<&'a str>,
}

/// The levels of `s` (see [`Levels`]).
pub(crate) fn levels(s: &str) -> Levels<'_> {
    Levels { rest: Some(s) }
}

impl<'a> Iterator for Levels<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match s.bytes().position(|b| b == b'/') {
            Some(i) => {
                self.rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to 6 characters over `a / é +` splits as `str::split('/')` does.
    #[test]
    fn levels_agree_with_str_split() {
        let alphabet = ["a", "/", "é", "+"];
        let mut strings = vec![String::new()];
        let mut checked = 0;
        for _ in 0..6 {
            let mut longer = Vec::new();
            for s in &strings {
                for c in alphabet {
                    longer.push(format!("{s}{c}"));
                }
            }
            for s in strings.iter().chain(&longer) {
                let ours: Vec<&str> = levels(s).collect();
                let std: Vec<&str> = s.split('/').collect();
                assert_eq!(ours, std, "{s:?}");
                checked += 1;
            }
            strings = longer;
        }
        assert!(checked > 5_000);
    }

    #[test]
    fn a_clone_continues_from_where_it_was_taken() {
        let mut it = levels("a/b/c");
        assert_eq!(it.next(), Some("a"));
        let rest: Vec<&str> = it.clone().collect();
        assert_eq!(rest, ["b", "c"]);
        assert_eq!(it.collect::<Vec<_>>(), ["b", "c"]);
    }
}
