//! The repositories a run writes to: each resolved from the config once
//! into a [`RepoSpec`] (every value parsed into its type), and opened at
//! most once per run by [`Repos`].
use std::collections::HashMap;
use std::sync::Arc;

use kura_format::clock::Clock;
use kura_policy::{Config, ConfigError, Target};
use kura_repo::Repository;
use kura_store::RetryPolicy;

use crate::password::{self, PasswordError, Source};
use crate::RunError;

/// A repository, ready to open.
#[derive(Clone, Debug)]
pub struct RepoSpec {
    /// Its name in kura.toml; `None` for a location given directly.
    pub name: Option<String>,
    /// The URL with the configured S3 write options applied.
    pub url: String,
    /// Its own password sources (kura.toml), tried after the caller's.
    pub passwords: Vec<Source>,
    /// The zstd level of what is written; `None` is the automatic choice.
    pub compression: Option<i32>,
    pub retry: RetryPolicy,
}

impl RepoSpec {
    /// A location with no settings of its own.
    pub fn at(url: impl Into<String>, retry: RetryPolicy) -> RepoSpec {
        RepoSpec { name: None, url: url.into(), passwords: Vec::new(), compression: None, retry }
    }

    /// The repository `name` of the config.
    pub fn configured(cfg: &Config, name: &str, retry: RetryPolicy) -> Result<RepoSpec, RunError> {
        if let Some(u) = cfg.unresolved_named("repository", name) {
            return Err(ConfigError::Unresolved(u.error.clone()).into());
        }
        let rc = cfg.repositories.get(name).ok_or_else(|| ConfigError::Invalid {
            place: format!("repository.{name}"),
            message: "not configured".into(),
        })?;
        let url = rc.s3.apply(&rc.url).map_err(|e| ConfigError::Invalid {
            place: format!("repository.{name}"),
            message: e.to_string(),
        })?;
        let mut passwords = Vec::new();
        if let Some(p) = &rc.password_file {
            passwords.push(Source::File { path: p.clone(), from: "password_file in kura.toml".into() });
        }
        if let Some(c) = &rc.password_command {
            passwords
                .push(Source::Command { command: c.clone(), from: "password_command in kura.toml".into() });
        }
        let compression = match &rc.compression {
            Some(c) => kura_policy::parse_compression(c).map_err(|message| ConfigError::Invalid {
                place: format!("repository.{name}.compression"),
                message,
            })?,
            None => None,
        };
        Ok(RepoSpec { name: Some(name.to_string()), url, passwords, compression, retry })
    }
}

/// How passwords are found: the caller's sources (its command line and
/// environment), tried before a repository's own, and a prompt for when
/// none is set.
#[derive(Default)]
pub struct Unlock {
    pub sources: Vec<Source>,
    #[allow(clippy::type_complexity)]
    pub prompt: Option<Box<dyn Fn() -> Result<Vec<u8>, PasswordError> + Send + Sync>>,
    /// A compression level that wins over every repository's own.
    pub compression: Option<Option<i32>>,
}

impl Unlock {
    /// The sources tried for `spec`, in order.
    pub fn sources_for<'a>(&'a self, spec: &'a RepoSpec) -> impl Iterator<Item = &'a Source> {
        self.sources.iter().chain(&spec.passwords)
    }

    /// The source that would be used, for a wrong-password message.
    pub fn describe(&self, spec: &RepoSpec) -> String {
        match self.sources_for(spec).next() {
            Some(s) => format!("the password came from {}", s.describe()),
            None => "no password source is set".into(),
        }
    }

    pub fn password(&self, spec: &RepoSpec) -> Result<Vec<u8>, RunError> {
        if let Some(src) = self.sources_for(spec).next() {
            return Ok(password::read(src)?);
        }
        match &self.prompt {
            Some(prompt) => Ok(prompt()?),
            None => Err(PasswordError::NoneGiven.into()),
        }
    }
}

/// Opens repositories, each once: a run over targets that share one
/// repository reads its keys and config once.
pub struct Repos {
    pub unlock: Unlock,
    clock: Arc<dyn Clock>,
    /// For targets whose repository the config does not name (a config with
    /// no `[repository]` sections): what the caller chose, or why it could
    /// not (a message and a hint).
    fallback: Option<Result<RepoSpec, (String, Option<String>)>>,
    retry: RetryPolicy,
    opened: tokio::sync::Mutex<HashMap<String, Arc<Repository>>>,
}

impl Repos {
    pub fn new(unlock: Unlock, clock: Arc<dyn Clock>, retry: RetryPolicy) -> Repos {
        Repos { unlock, clock, fallback: None, retry, opened: Default::default() }
    }

    /// The repository of targets the config gives none of.
    pub fn with_fallback(mut self, fallback: Result<RepoSpec, (String, Option<String>)>) -> Repos {
        self.fallback = Some(fallback);
        self
    }

    /// The spec of the repository `target` writes to: its own, when the
    /// config has it, else the fallback.
    pub fn spec_for(&self, cfg: &Config, target: &Target) -> Result<RepoSpec, RunError> {
        if target.repository.is_empty() {
            return Err(RunError::usage_hint(
                format!(
                    "target {} names no repository, and kura.toml has several ({}) and none called main",
                    target.name,
                    names(cfg).join(", ")
                ),
                "add repository = \"NAME\" to the target, or run it through a plan that names one",
            ));
        }
        if cfg.repositories.contains_key(&target.repository)
            || cfg.unresolved_named("repository", &target.repository).is_some()
        {
            return RepoSpec::configured(cfg, &target.repository, self.retry.clone());
        }
        match &self.fallback {
            Some(Ok(spec)) => Ok(spec.clone()),
            Some(Err((message, hint))) => {
                Err(RunError::Usage { message: message.clone(), hint: hint.clone() })
            }
            None => Err(RunError::usage(format!(
                "target {}: repository {:?} is not configured",
                target.name, target.repository
            ))),
        }
    }

    pub async fn for_target(&self, cfg: &Config, target: &Target) -> Result<Arc<Repository>, RunError> {
        let spec = self.spec_for(cfg, target)?;
        self.open(&spec).await
    }

    /// Opens `spec`, or returns the copy opened before.
    pub async fn open(&self, spec: &RepoSpec) -> Result<Arc<Repository>, RunError> {
        let mut opened = self.opened.lock().await;
        if let Some(r) = opened.get(&spec.url) {
            return Ok(r.clone());
        }
        let store = kura_store::open_url_with(&spec.url, &|k| std::env::var(k).ok(), spec.retry.clone())?;
        // The config first: a missing or newer repository says so before
        // anyone is asked for a password.
        let locked = Repository::locked(store).await?;
        let repo = self.unlock_store(spec, &locked)?;
        let repo = repo.with_clock(self.clock.clone());
        let level = self.unlock.compression.unwrap_or(spec.compression);
        let repo = Arc::new(match level {
            Some(l) => repo.with_compression(l),
            None => repo,
        });
        opened.insert(spec.url.clone(), repo.clone());
        Ok(repo)
    }
}

impl Repos {
    /// Opens the repository in `store` with the first password that fits:
    /// the caller's sources, then the repository's own (a copy's
    /// destination has its own password while the caller's is the
    /// source's), or the prompt when there are none.
    fn unlock_store(&self, spec: &RepoSpec, locked: &kura_repo::Locked) -> Result<Repository, RunError> {
        let sources: Vec<&Source> = self.unlock.sources_for(spec).collect();
        let wrong = |e, tried: &[&Source]| RunError::WrongPassword {
            from: match tried {
                [] => "the password came from the prompt".to_string(),
                [one] => format!("the password came from {}", one.describe()),
                many => format!(
                    "the passwords came from {}",
                    many.iter().map(|s| s.describe()).collect::<Vec<_>>().join(", then ")
                ),
            },
            source: e,
        };
        if sources.is_empty() {
            let password = self.unlock.password(spec)?;
            return locked.unlock(&password).map_err(|e| match e {
                e @ kura_repo::RepoError::WrongPassword { .. } => wrong(e, &[]),
                e => e.into(),
            });
        }
        let mut refused = None;
        for src in &sources {
            let password = password::read(src)?;
            match locked.unlock(&password) {
                Ok(r) => return Ok(r),
                Err(e @ kura_repo::RepoError::WrongPassword { .. }) => refused = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(wrong(refused.expect("at least one source was tried"), &sources))
    }
}

/// A config's repository names, for messages.
pub fn names(cfg: &Config) -> Vec<String> {
    cfg.repositories.keys().cloned().collect()
}
