//! Where the password comes from: KURA_PASSWORD, --password-file,
//! --password-command, or a prompt on a terminal. Never from argv.
use std::io::IsTerminal;

use crate::cli::Global;
use crate::output::Failure;

const HINT: &str = "set KURA_PASSWORD, or pass --password-file or --password-command";

/// kura's own secrets, taken out of the environment at start.
struct EnvSecrets {
    password: Option<std::ffi::OsString>,
    new_password: Option<std::ffi::OsString>,
}

static SECRETS: std::sync::OnceLock<EnvSecrets> = std::sync::OnceLock::new();

/// Takes `KURA_PASSWORD` and `KURA_NEW_PASSWORD` out of the process
/// environment, so that no child inherits them: not a hook, not pg_dump, not
/// `kura backup --command env`, whose output would put the password inside
/// the snapshot. Called first thing in `main`, before any thread exists.
pub fn take_env_secrets() {
    let secrets = EnvSecrets {
        password: std::env::var_os("KURA_PASSWORD"),
        new_password: std::env::var_os("KURA_NEW_PASSWORD"),
    };
    std::env::remove_var("KURA_PASSWORD");
    std::env::remove_var("KURA_NEW_PASSWORD");
    let _ = SECRETS.set(secrets);
}

fn env_secret(new: bool) -> Option<&'static std::ffi::OsString> {
    let s = SECRETS.get()?;
    if new {
        s.new_password.as_ref()
    } else {
        s.password.as_ref()
    }
}

/// One place a password may come from, in the order they are tried.
enum Source {
    File(std::path::PathBuf, &'static str),
    Command(String, &'static str),
    Env(&'static std::ffi::OsString, &'static str),
}

/// Where the password comes from, most explicit first: the command line,
/// then the environment (`KURA_PASSWORD`, `KURA_PASSWORD_FILE`,
/// `KURA_PASSWORD_COMMAND`), then the repository's section of kura.toml.
/// The first one set is used; the others are not tried.
fn sources(g: &Global) -> Vec<Source> {
    let mut v = Vec::new();
    if let Some(p) = &g.password_file {
        v.push(Source::File(p.clone(), "--password-file"));
    }
    if let Some(c) = &g.password_command {
        v.push(Source::Command(c.clone(), "--password-command"));
    }
    if let Some(p) = env_secret(false) {
        v.push(Source::Env(p, "KURA_PASSWORD"));
    }
    if let Some(p) = std::env::var_os("KURA_PASSWORD_FILE").filter(|p| !p.is_empty()) {
        v.push(Source::File(p.into(), "KURA_PASSWORD_FILE"));
    }
    if let Some(c) = std::env::var("KURA_PASSWORD_COMMAND").ok().filter(|c| !c.is_empty()) {
        v.push(Source::Command(c, "KURA_PASSWORD_COMMAND"));
    }
    if let Some(p) = &g.config_password_file {
        v.push(Source::File(p.clone(), "password_file in kura.toml"));
    }
    if let Some(c) = &g.config_password_command {
        v.push(Source::Command(c.clone(), "password_command in kura.toml"));
    }
    v
}

/// The sources that would be tried, for a wrong-password hint.
pub fn describe_sources(g: &Global) -> String {
    let names: Vec<String> = sources(g)
        .iter()
        .map(|s| match s {
            Source::File(p, from) => format!("{from} ({})", p.display()),
            Source::Command(_, from) | Source::Env(_, from) => from.to_string(),
        })
        .collect();
    if names.is_empty() {
        "no password source is set".into()
    } else {
        format!("the password came from {}", names[0])
    }
}

fn read_source(src: &Source) -> Result<Vec<u8>, Failure> {
    match src {
        Source::Env(p, from) => {
            if p.is_empty() {
                return Err(Failure::new(format!("{from} is set but empty"))
                    .hint("an empty password is never used; set it, or unset it to use another source"));
            }
            Ok(p.as_encoded_bytes().to_vec())
        }
        Source::File(path, from) => {
            warn_if_readable_by_others(path);
            let text = std::fs::read(path).map_err(|e| {
                Failure::new(format!("cannot read password file {} (from {from}): {e}", path.display()))
                    .hint(HINT)
            })?;
            first_line(text, &format!("password file {} (from {from})", path.display()))
        }
        Source::Command(cmd, from) => {
            let out = std::process::Command::new("sh")
                .args(["-c", cmd])
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| Failure::new(format!("cannot run the password command ({from}): {e}")))?;
            if !out.status.success() {
                return Err(
                    Failure::new(format!("the password command ({from}) failed ({})", out.status)).hint(HINT)
                );
            }
            first_line(out.stdout, &format!("the output of the password command ({from})"))
        }
    }
}

pub fn read_password(g: &Global) -> Result<Vec<u8>, Failure> {
    if let Some(src) = sources(g).first() {
        return read_source(src);
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let p = rpassword::prompt_password("repository password: ")
            .map_err(|e| Failure::new(format!("cannot read the password: {e}")))?;
        if p.is_empty() {
            return Err(Failure::new("an empty password is not allowed"));
        }
        return Ok(p.into_bytes());
    }
    Err(Failure::new("no password given").hint(HINT))
}

/// A new password. For `init` (`current_sources`) it comes from the same
/// places as any password; for `key add` from `file`, KURA_NEW_PASSWORD or a
/// prompt, since the usual sources hold the password that opens the
/// repository. Asked twice on a terminal. Never empty.
pub fn read_new_password(
    g: &Global,
    file: Option<&std::path::Path>,
    current_sources: bool,
) -> Result<Vec<u8>, Failure> {
    if let Some(path) = file {
        return read_source(&Source::File(path.to_path_buf(), "--new-password-file"));
    }
    if current_sources {
        if let Some(src) = sources(g).first() {
            return read_source(src);
        }
    } else if let Some(p) = env_secret(true) {
        return read_source(&Source::Env(p, "KURA_NEW_PASSWORD"));
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let a = rpassword::prompt_password("new password: ").map_err(|e| Failure::new(e.to_string()))?;
        let b = rpassword::prompt_password("again: ").map_err(|e| Failure::new(e.to_string()))?;
        if a != b {
            return Err(Failure::new("the passwords differ"));
        }
        if a.is_empty() {
            return Err(Failure::new("an empty password is not allowed"));
        }
        return Ok(a.into_bytes());
    }
    Err(Failure::new("no password given").hint(HINT))
}

fn first_line(mut text: Vec<u8>, what: &str) -> Result<Vec<u8>, Failure> {
    if let Some(n) = text.iter().position(|&b| b == b'\n') {
        text.truncate(n);
    }
    if text.last() == Some(&b'\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err(Failure::new(format!("{what} is empty")).hint(HINT));
    }
    Ok(text)
}

fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "password file {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
}
