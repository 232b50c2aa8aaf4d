//! Where the password comes from: KURA_PASSWORD, --password-file,
//! --password-command, or a prompt on a terminal. Never from argv.
use std::io::IsTerminal;

use crate::cli::Global;
use crate::output::Failure;

const HINT: &str = "set KURA_PASSWORD, or pass --password-file or --password-command";

pub fn read_password(g: &Global) -> Result<Vec<u8>, Failure> {
    if let Some(p) = std::env::var_os("KURA_PASSWORD") {
        return Ok(p.into_encoded_bytes());
    }
    if let Some(path) = &g.password_file {
        warn_if_readable_by_others(path);
        let text = std::fs::read(path).map_err(|e| {
            Failure::new(format!("cannot read password file {}: {e}", path.display())).hint(HINT)
        })?;
        return first_line(text, &format!("password file {}", path.display()));
    }
    if let Some(cmd) = &g.password_command {
        let out = std::process::Command::new("sh")
            .args(["-c", cmd])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| Failure::new(format!("cannot run the password command: {e}")))?;
        if !out.status.success() {
            return Err(Failure::new(format!("the password command failed ({})", out.status)).hint(HINT));
        }
        return first_line(out.stdout, "the password command's output");
    }
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        let p = rpassword::prompt_password("repository password: ")
            .map_err(|e| Failure::new(format!("cannot read the password: {e}")))?;
        return Ok(p.into_bytes());
    }
    Err(Failure::new("no password given").hint(HINT))
}

/// A new password. For `init` (`current_sources`) it comes from the same
/// places as any password; for `key add` from `file`, KURA_NEW_PASSWORD or a
/// prompt, since the usual sources hold the password that opens the
/// repository. Asked twice on a terminal.
pub fn read_new_password(
    g: &Global,
    file: Option<&std::path::Path>,
    current_sources: bool,
) -> Result<Vec<u8>, Failure> {
    if let Some(path) = file {
        let text = std::fs::read(path)
            .map_err(|e| Failure::new(format!("cannot read password file {}: {e}", path.display())))?;
        return first_line(text, &format!("password file {}", path.display()));
    }
    if current_sources {
        if std::env::var_os("KURA_PASSWORD").is_some()
            || g.password_file.is_some()
            || g.password_command.is_some()
        {
            return read_password(g);
        }
    } else if let Some(p) = std::env::var_os("KURA_NEW_PASSWORD") {
        return Ok(p.into_encoded_bytes());
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
