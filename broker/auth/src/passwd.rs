//! `halyard passwd [-c] [-b] [-D] FILE USER [PASSWORD]`: manage a password file the way
//! `mosquitto_passwd` does.

use std::io::IsTerminal as _;
use std::path::PathBuf;

use crate::error::AuthError;
use crate::password::{DEFAULT_ITERATIONS, MAX_ITERATIONS, PasswordFile, PasswordHash};

/// Arguments of `halyard passwd`. The server adds the subcommand with
/// `Passwd(halyard_auth::PasswdArgs)` and calls [`passwd_main`].
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct PasswdArgs {
    /// Create the file, replacing an existing one.
    #[arg(short = 'c', conflicts_with = "delete")]
    pub create: bool,
    /// Take the password from the command line (visible to other users in `ps`).
    #[arg(short = 'b', conflicts_with = "delete")]
    pub batch: bool,
    /// Delete USER from the file.
    #[arg(short = 'D')]
    pub delete: bool,
    /// PBKDF2-HMAC-SHA512 iterations for the new hash.
    #[arg(short = 'I', long = "iterations", default_value_t = DEFAULT_ITERATIONS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ITERATIONS)))]
    pub iterations: u32,
    /// The password file.
    pub file: PathBuf,
    /// The user to add, change or delete.
    pub user: String,
    /// The password (only with -b).
    pub password: Option<String>,
}

/// Runs `halyard passwd`: adds or updates USER (prompting twice on a terminal, or reading one
/// line from standard input when it is not a terminal, unless `-b` gives the password),
/// or deletes USER with `-D`. The file is rewritten atomically with mode 0600.
pub fn passwd_main(args: PasswdArgs) -> Result<(), AuthError> {
    passwd_with_input(args, read_password_interactive)
}

/// [`passwd_main`] with the password source injected (tests).
fn passwd_with_input(
    args: PasswdArgs,
    read_password: impl FnOnce() -> Result<String, AuthError>,
) -> Result<(), AuthError> {
    crate::password::validate_username(&args.user)?;
    if args.delete {
        if args.create || args.batch || args.password.is_some() {
            return Err(AuthError::Usage("-D takes no -c, -b or PASSWORD".into()));
        }
        let mut file = PasswordFile::load(&args.file)?;
        if !file.remove(&args.user) {
            return Err(AuthError::UnknownUser {
                path: args.file,
                user: args.user,
            });
        }
        return file.save();
    }
    let password = match (args.batch, args.password) {
        (true, Some(p)) => p,
        (true, None) => return Err(AuthError::Usage("-b needs a PASSWORD argument".into())),
        (false, Some(_)) => {
            return Err(AuthError::Usage(
                "a PASSWORD argument needs -b (or omit it to be prompted)".into(),
            ));
        }
        (false, None) => read_password()?,
    };
    if password.is_empty() {
        return Err(AuthError::EmptyPassword);
    }
    let mut file = if args.create {
        PasswordFile::empty(&args.file)
    } else {
        PasswordFile::load(&args.file)?
    };
    file.set(
        &args.user,
        PasswordHash::new(password.as_bytes(), args.iterations)?,
    )?;
    file.save()
}

/// Prompts twice on the terminal, or reads one line from standard input when it is not one.
fn read_password_interactive() -> Result<String, AuthError> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").map_err(AuthError::Terminal)?;
        let second =
            rpassword::prompt_password("Reenter password: ").map_err(AuthError::Terminal)?;
        if first != second {
            return Err(AuthError::PasswordMismatch);
        }
        Ok(first)
    } else {
        read_password_line(std::io::stdin().lock())
    }
}

/// One password from a pipe: the first line without its line ending.
fn read_password_line(mut input: impl std::io::BufRead) -> Result<String, AuthError> {
    let mut line = String::new();
    input.read_line(&mut line).map_err(AuthError::Terminal)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: PasswdArgs,
    }

    fn parse(argv: &[&str]) -> Result<PasswdArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("passwd").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn no_prompt() -> Result<String, AuthError> {
        panic!("must not prompt")
    }

    #[test]
    fn command_line_is_parsed_like_mosquitto_passwd() {
        let a = parse(&["-c", "-b", "f", "alice", "pw"]).unwrap();
        assert!(a.create && a.batch && !a.delete);
        assert_eq!(
            (a.user.as_str(), a.password.as_deref()),
            ("alice", Some("pw"))
        );
        assert_eq!(a.iterations, DEFAULT_ITERATIONS);
        let a = parse(&["-D", "f", "alice"]).unwrap();
        assert!(a.delete && a.password.is_none());
        assert!(parse(&["-c", "-D", "f", "u"]).is_err());
        assert!(parse(&["-I", "0", "f", "u"]).is_err());
        assert_eq!(parse(&["-I", "7", "f", "u"]).unwrap().iterations, 7);
    }

    #[test]
    fn create_add_change_delete() {
        let dir = std::env::temp_dir().join(format!("halyard-auth-passwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        let f = file.to_str().unwrap();
        let run = |argv: &[&str]| passwd_with_input(parse(argv).unwrap(), no_prompt);

        // Adding to a file that does not exist needs -c.
        assert!(matches!(
            run(&["-b", "-I", "3", f, "alice", "a1"]),
            Err(AuthError::Io { .. })
        ));
        run(&["-c", "-b", "-I", "3", f, "alice", "a1"]).unwrap();
        run(&["-b", "-I", "3", f, "bob", "b1"]).unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert!(pw.verify("alice", b"a1") && pw.verify("bob", b"b1"));

        // Prompted / piped password.
        passwd_with_input(parse(&["-I", "3", f, "alice"]).unwrap(), || Ok("a2".into())).unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert!(pw.verify("alice", b"a2") && !pw.verify("alice", b"a1"));
        let mismatch = passwd_with_input(parse(&[f, "alice"]).unwrap(), || {
            Err(AuthError::PasswordMismatch)
        });
        assert!(matches!(mismatch, Err(AuthError::PasswordMismatch)));

        run(&["-D", f, "alice"]).unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert!(!pw.contains("alice") && pw.verify("bob", b"b1"));
        assert!(matches!(
            run(&["-D", f, "alice"]),
            Err(AuthError::UnknownUser { .. })
        ));

        // -c replaces the whole file.
        run(&["-c", "-b", "-I", "3", f, "carol", "c1"]).unwrap();
        let pw = PasswordFile::load(&file).unwrap();
        assert_eq!(pw.users().collect::<Vec<_>>(), ["carol"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn piped_password_is_the_first_line() {
        let read = |s: &str| read_password_line(std::io::Cursor::new(s.as_bytes().to_vec()));
        assert_eq!(
            read("pw with spaces\r\nsecond\n").unwrap(),
            "pw with spaces"
        );
        assert_eq!(read("last").unwrap(), "last");
        assert_eq!(read("").unwrap(), "");
    }

    #[test]
    fn usage_errors() {
        let run = |argv: &[&str]| passwd_with_input(parse(argv).unwrap(), no_prompt);
        assert!(matches!(run(&["-b", "f", "u"]), Err(AuthError::Usage(_))));
        assert!(matches!(run(&["f", "u", "pw"]), Err(AuthError::Usage(_))));
        assert!(matches!(
            run(&["-b", "f", "u", ""]),
            Err(AuthError::EmptyPassword)
        ));
        assert!(matches!(
            run(&["-b", "f", "a:b", "x"]),
            Err(AuthError::InvalidUsername(_))
        ));
        assert!(matches!(
            run(&["-D", "f", "u", "x"]),
            Err(AuthError::Usage(_))
        ));
    }
}
