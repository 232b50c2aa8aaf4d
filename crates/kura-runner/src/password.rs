//! Where a repository's password comes from: a file, a command's first
//! line, or a secret the caller took from its environment. The first
//! source set is used; the others are not tried.
use std::path::PathBuf;

/// One place a password may come from; `from` names it for messages
/// (`--password-file`, `password_command in kura.toml`).
#[derive(Clone, Debug)]
pub enum Source {
    File { path: PathBuf, from: String },
    Command { command: String, from: String },
    Secret { secret: Vec<u8>, from: String },
}

impl Source {
    pub fn from(&self) -> &str {
        match self {
            Source::File { from, .. } | Source::Command { from, .. } | Source::Secret { from, .. } => from,
        }
    }

    /// "--password-file (/etc/kura/pw)": the source as a wrong-password
    /// message names it.
    pub fn describe(&self) -> String {
        match self {
            Source::File { path, from } => format!("{from} ({})", path.display()),
            other => other.from().to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("{from} is set but empty")]
    EmptySecret { from: String },
    #[error("cannot read password file {} (from {from}): {source}", path.display())]
    File {
        path: PathBuf,
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run the password command ({from}): {source}")]
    CommandStart {
        from: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the password command ({from}) failed ({status})")]
    CommandFailed { from: String, status: String },
    #[error("{what} is empty")]
    Empty { what: String },
    #[error("no password given")]
    NoneGiven,
    #[error("cannot read the password: {0}")]
    Prompt(String),
}

impl PasswordError {
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            PasswordError::EmptySecret { .. } => {
                "an empty password is never used; set it, or unset it to use another source".into()
            }
            PasswordError::CommandStart { .. } | PasswordError::Prompt(_) => return None,
            _ => "set KURA_PASSWORD, or pass --password-file or --password-command".into(),
        })
    }
}

/// The password from `src`: a file's or a command's first line, never
/// empty.
pub fn read(src: &Source) -> Result<Vec<u8>, PasswordError> {
    match src {
        Source::Secret { secret, from } => {
            if secret.is_empty() {
                return Err(PasswordError::EmptySecret { from: from.clone() });
            }
            Ok(secret.clone())
        }
        Source::File { path, from } => {
            warn_if_readable_by_others(path);
            let text = std::fs::read(path).map_err(|source| PasswordError::File {
                path: path.clone(),
                from: from.clone(),
                source,
            })?;
            first_line(text, format!("password file {} (from {from})", path.display()))
        }
        Source::Command { command, from } => {
            let out = std::process::Command::new("sh")
                .args(["-c", command])
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|source| PasswordError::CommandStart { from: from.clone(), source })?;
            if !out.status.success() {
                return Err(PasswordError::CommandFailed {
                    from: from.clone(),
                    status: out.status.to_string(),
                });
            }
            first_line(out.stdout, format!("the output of the password command ({from})"))
        }
    }
}

fn first_line(mut text: Vec<u8>, what: String) -> Result<Vec<u8>, PasswordError> {
    if let Some(n) = text.iter().position(|&b| b == b'\n') {
        text.truncate(n);
    }
    if text.last() == Some(&b'\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err(PasswordError::Empty { what });
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
