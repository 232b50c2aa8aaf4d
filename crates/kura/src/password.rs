//! Where the password comes from: KURA_PASSWORD, --password-file,
//! --password-command, or a prompt on a terminal. Never from argv.
use std::io::IsTerminal;

use kura_runner::password::{self, PasswordError, Source};
use kura_runner::Unlock;

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

/// The command line's and the environment's password sources, most
/// explicit first: `--password-file`, `--password-command`, then
/// `KURA_PASSWORD`, `KURA_PASSWORD_FILE`, `KURA_PASSWORD_COMMAND`. A
/// configured repository's own sources (kura.toml) come after these.
fn sources(g: &Global) -> Vec<Source> {
    let mut v = Vec::new();
    if let Some(p) = &g.password_file {
        v.push(Source::File { path: p.clone(), from: "--password-file".into() });
    }
    if let Some(c) = &g.password_command {
        v.push(Source::Command { command: c.clone(), from: "--password-command".into() });
    }
    if let Some(p) = env_secret(false) {
        v.push(Source::Secret { secret: p.as_encoded_bytes().to_vec(), from: "KURA_PASSWORD".into() });
    }
    if let Some(p) = std::env::var_os("KURA_PASSWORD_FILE").filter(|p| !p.is_empty()) {
        v.push(Source::File { path: p.into(), from: "KURA_PASSWORD_FILE".into() });
    }
    if let Some(c) = std::env::var("KURA_PASSWORD_COMMAND").ok().filter(|c| !c.is_empty()) {
        v.push(Source::Command { command: c, from: "KURA_PASSWORD_COMMAND".into() });
    }
    v
}

/// How this command finds passwords: its sources, then a prompt when on a
/// terminal.
pub fn unlock(g: &Global) -> Unlock {
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    Unlock {
        sources: sources(g),
        prompt: terminal.then(|| {
            Box::new(|| {
                let p = rpassword::prompt_password("repository password: ")
                    .map_err(|e| PasswordError::Prompt(e.to_string()))?;
                if p.is_empty() {
                    return Err(PasswordError::Prompt("an empty password is not allowed".into()));
                }
                Ok(p.into_bytes())
            }) as Box<dyn Fn() -> Result<Vec<u8>, PasswordError> + Send + Sync>
        }),
        compression: None,
    }
}

/// A new password. For `init` (`repository`) it comes from the same
/// places as any password; for `key add` from `file`, KURA_NEW_PASSWORD or a
/// prompt, since the usual sources hold the password that opens the
/// repository. Asked twice on a terminal. Never empty.
pub fn read_new_password(
    g: &Global,
    file: Option<&std::path::Path>,
    repository: Option<&kura_runner::RepoSpec>,
) -> Result<Vec<u8>, Failure> {
    if let Some(path) = file {
        let src = Source::File { path: path.to_path_buf(), from: "--new-password-file".into() };
        return Ok(password::read(&src).map_err(kura_runner::RunError::from)?);
    }
    if let Some(spec) = repository {
        if let Some(src) = sources(g).iter().chain(&spec.passwords).next() {
            return Ok(password::read(src).map_err(kura_runner::RunError::from)?);
        }
    } else if let Some(p) = env_secret(true) {
        let src = Source::Secret { secret: p.as_encoded_bytes().to_vec(), from: "KURA_NEW_PASSWORD".into() };
        return Ok(password::read(&src).map_err(kura_runner::RunError::from)?);
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
