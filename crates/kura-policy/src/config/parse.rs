//! From the text of kura.toml to a [`Config`]: each top-level section by
//! its own function, so that a new section is a new function and a line in
//! [`parse_named`], and each target type by [`target_kind`].
use std::collections::BTreeMap;

use super::*;

/// The sections kura.toml may have.
const SECTIONS: &[&str] = &["repository", "target", "kept", "plan", "monitor", "alerts", "notify"];

pub(super) fn parse_named(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let (cfg, problems) = parse_collecting(text, name, env);
    match (cfg, problems.into_iter().next()) {
        (Some(cfg), None) => Ok(cfg),
        (_, Some(first)) => Err(first),
        (None, None) => unreachable!("a config that did not parse has a problem"),
    }
}

/// Parses on past a section that is wrong, so that every problem is
/// found (`kura config check`). A section that failed is treated as
/// absent-but-named by what refers to it, so one mistake is reported
/// once, not again by every section naming it. The config is returned
/// when the text is valid TOML; it is usable only without problems.
pub(super) fn parse_collecting(
    text: &str,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Config>, Vec<ConfigError>) {
    let mut root: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            return (None, vec![ConfigError::Syntax { path: name.to_string(), message: e.to_string() }]);
        }
    };
    let mut problems = Vec::new();
    let unknown: Vec<String> = root.keys().filter(|k| !SECTIONS.contains(&k.as_str())).cloned().collect();
    for key in unknown {
        root.remove(&key);
        problems.push(invalid(key.as_str(), format!("unknown section (known: {})", SECTIONS.join(", "))));
    }
    let kept_default = kept_section(root.remove("kept")).unwrap_or_else(|e| {
        problems.push(e);
        KeptPolicy::default()
    });
    let monitor = monitor_section(root.remove("monitor"), env).unwrap_or_else(|e| {
        problems.push(e);
        MonitorConfig::default()
    });
    let alerts = super::notify::alerts_section(root.remove("alerts")).unwrap_or_else(|e| {
        problems.push(e);
        AlertRules::default()
    });
    let notify = super::notify::notify_section(root.remove("notify"), env, &mut problems);
    let mut unresolved = Vec::new();
    let repositories = repositories(root.remove("repository"), env, &mut unresolved, &mut problems);
    let targets =
        targets(root.remove("target"), env, &repositories, kept_default, &mut unresolved, &mut problems);
    let plans = plans(root.remove("plan"), env, &targets, &repositories, &mut unresolved, &mut problems);
    // A target that names no repository where several are configured and
    // none is main writes where a plan sends it; without such a plan it
    // has nowhere to go.
    for t in targets.values().filter(|t| t.repository.is_empty()) {
        let sent = plans.values().any(|p| p.repository.is_some() && p.targets.contains(&t.name));
        if !sent {
            problems.push(invalid(
                format!("target.{}.repository", t.name),
                format!(
                    "no repository named \"main\" (configured: {}); name one, or back the target up through a plan with `repository`",
                    join(repositories.keys())
                ),
            ));
        }
    }
    // Sections that failed were listed as waiting (see `broken`); they are
    // problems, not unresolved variables.
    unresolved.retain(|u| !u.error.is_empty());
    (Some(Config { repositories, targets, plans, monitor, alerts, notify, unresolved }), problems)
}

/// Notes a section that failed, so that what names it does not fail too.
fn broken(unresolved: &mut Vec<Unresolved>, section: &'static str, name: &str) {
    unresolved.push(Unresolved { section, name: name.to_string(), component: None, error: String::new() });
}

/// `[kept]`: the defaults of every target's `kept_last` / `kept_within`.
fn kept_section(v: Option<toml::Value>) -> Result<KeptPolicy, ConfigError> {
    match v {
        None => Ok(KeptPolicy::default()),
        Some(toml::Value::Table(mut t)) => {
            let p = KeptPolicy::take(&mut t, "kept", "", KeptPolicy::default())?;
            if let Some(k) = t.keys().next() {
                return Err(invalid(format!("kept.{k}"), "unknown key (known: last, within)"));
            }
            Ok(p)
        }
        Some(_) => Err(invalid("kept", "must be a table (last = 3, within = \"30d\")")),
    }
}

/// `[monitor]`: listen address and token.
fn monitor_section(
    v: Option<toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MonitorConfig, ConfigError> {
    let Some(mut v) = v else { return Ok(MonitorConfig::default()) };
    // A token from a variable that is unset is an error here, not a
    // monitor left open to anyone.
    expand_value(&mut v, "monitor", env)?;
    let toml::Value::Table(mut t) = v else {
        return Err(invalid("monitor", "must be a table (listen = \"127.0.0.1:9780\")"));
    };
    let mut text = |key: &str| match t.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("monitor.{key}"), "must be a string")),
    };
    let listen = text("listen")?;
    if let Some(l) = &listen {
        l.parse::<std::net::SocketAddr>().map_err(|_| {
            invalid("monitor.listen", format!("{l:?} is not host:port like \"127.0.0.1:9780\""))
        })?;
    }
    let token = text("token")?.filter(|s| !s.is_empty());
    let token_file = text("token_file")?.map(PathBuf::from);
    if token.is_some() && token_file.is_some() {
        return Err(invalid("monitor", "set token or token_file, not both"));
    }
    let pushgateway = text("pushgateway")?;
    if let Some(u) = &pushgateway {
        if !u.starts_with("http://") && !u.starts_with("https://") {
            return Err(invalid("monitor.pushgateway", format!("{u:?} is not an http:// or https:// URL")));
        }
    }
    let pushgateway_job = text("pushgateway_job")?.unwrap_or_else(|| "kura".into());
    if pushgateway_job.is_empty() || pushgateway_job.contains('/') {
        return Err(invalid("monitor.pushgateway_job", "must be a name without /"));
    }
    let textfile = text("textfile")?.map(PathBuf::from);
    if let Some(k) = t.keys().next() {
        return Err(invalid(
            format!("monitor.{k}"),
            "unknown key (known: listen, token, token_file, pushgateway, pushgateway_job, textfile)",
        ));
    }
    Ok(MonitorConfig { listen, token, token_file, pushgateway, pushgateway_job, textfile })
}

/// Expands a section's `${VAR}`s; a section whose variable is unset is set
/// aside as [`Unresolved`] (`Ok(None)`), to fail only where it is used.
fn expanded(
    mut v: toml::Value,
    section: &'static str,
    name: &str,
    component: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    unresolved: &mut Vec<Unresolved>,
) -> Result<Option<toml::Table>, ConfigError> {
    let place = format!("{section}.{name}");
    match expand_value(&mut v, &place, env) {
        Err(e @ ConfigError::MissingEnv { .. }) => {
            unresolved.push(Unresolved { section, name: name.to_string(), component, error: e.to_string() });
            return Ok(None);
        }
        other => other?,
    }
    match v {
        toml::Value::Table(t) => Ok(Some(t)),
        _ => Err(invalid(place, "must be a table")),
    }
}

/// `[repository.NAME]` sections.
fn repositories(
    v: Option<toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
    unresolved: &mut Vec<Unresolved>,
    problems: &mut Vec<ConfigError>,
) -> BTreeMap<String, RepositoryConfig> {
    let mut repositories = BTreeMap::new();
    let Some(v) = v else { return repositories };
    let toml::Value::Table(t) = v else {
        problems.push(invalid("repository", "must be a table of repositories"));
        return repositories;
    };
    for (rname, v) in t {
        let place = format!("repository.{rname}");
        let one = |unresolved: &mut Vec<Unresolved>| -> Result<Option<RepositoryConfig>, ConfigError> {
            let Some(t) = expanded(v, "repository", &rname, None, env, unresolved)? else { return Ok(None) };
            let repo: RepositoryConfig = section(&place, t)?;
            if repo.password_file.is_some() && repo.password_command.is_some() {
                return Err(invalid(&place, "give password_file or password_command, not both"));
            }
            if let Some(c) = &repo.compression {
                parse_compression(c).map_err(|e| invalid(format!("{place}.compression"), e))?;
            }
            Ok(Some(repo))
        };
        match one(unresolved) {
            Ok(Some(repo)) => {
                repositories.insert(rname, repo);
            }
            Ok(None) => {}
            Err(e) => {
                problems.push(e);
                broken(unresolved, "repository", &rname);
            }
        }
    }
    repositories
}

/// `[plan.NAME]` sections.
fn plans(
    v: Option<toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
    targets: &BTreeMap<String, Target>,
    repositories: &BTreeMap<String, RepositoryConfig>,
    unresolved: &mut Vec<Unresolved>,
    problems: &mut Vec<ConfigError>,
) -> BTreeMap<String, Plan> {
    let mut plans = BTreeMap::new();
    let Some(v) = v else { return plans };
    let toml::Value::Table(t) = v else {
        problems.push(invalid("plan", "must be a table of plans"));
        return plans;
    };
    for (name, v) in t {
        let waiting: Vec<String> =
            unresolved.iter().filter(|u| u.section == "target").map(|u| u.name.clone()).collect();
        let t = match expanded(v, "plan", &name, None, env, unresolved) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
        // A repository whose variable is unset is still a name the plan
        // may use; it fails when the plan runs.
        let repos: Vec<&str> = repositories
            .keys()
            .map(String::as_str)
            .chain(unresolved.iter().filter(|u| u.section == "repository").map(|u| u.name.as_str()))
            .collect();
        match super::plans::plan(&name, t, targets, &waiting, &repos) {
            Ok(p) => {
                plans.insert(name.clone(), p);
            }
            Err(e) => problems.push(e),
        }
    }
    plans
}

/// A target's component as far as its unexpanded text tells, for an
/// unresolved target that `--component` must still account for.
fn raw_component(v: &toml::Value) -> Option<String> {
    match (v.get("component").and_then(|c| c.as_str()), v.get("type").and_then(|t| t.as_str())) {
        (Some(c), _) if !c.contains("${") => Some(c.to_string()),
        (None, Some("sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb")) => Some("database".into()),
        (None, Some(t)) if !t.contains("${") => Some("data".into()),
        _ => None,
    }
}

/// `[target.NAME]` sections.
fn targets(
    v: Option<toml::Value>,
    env: &dyn Fn(&str) -> Option<String>,
    repositories: &BTreeMap<String, RepositoryConfig>,
    kept_default: KeptPolicy,
    unresolved: &mut Vec<Unresolved>,
    problems: &mut Vec<ConfigError>,
) -> BTreeMap<String, Target> {
    let mut targets = BTreeMap::new();
    let Some(v) = v else { return targets };
    let toml::Value::Table(t) = v else {
        problems.push(invalid("target", "must be a table of targets"));
        return targets;
    };
    for (tname, v) in t {
        let component = raw_component(&v);
        let one = match expanded(v, "target", &tname, component, env, unresolved) {
            Ok(Some(t)) => target(&tname, t, repositories, kept_default, unresolved).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match one {
            Ok(Some(target)) => {
                targets.insert(tname, target);
            }
            Ok(None) => {}
            Err(e) => {
                problems.push(e);
                broken(unresolved, "target", &tname);
            }
        }
    }
    targets
}

fn target(
    tname: &str,
    mut t: toml::Table,
    repositories: &BTreeMap<String, RepositoryConfig>,
    kept_default: KeptPolicy,
    unresolved: &[Unresolved],
) -> Result<Target, ConfigError> {
    let place = format!("target.{tname}");
    let kind_name = match t.remove("type") {
        Some(toml::Value::String(s)) => s,
        Some(_) => return Err(invalid(format!("{place}.type"), "must be a string")),
        None => {
            return Err(invalid(
                &place,
                "missing `type` (sqlite, files, postgres, mysql, command, object_store)",
            ))
        }
    };
    let take = |t: &mut toml::Table, key: &str| -> Result<Option<String>, ConfigError> {
        match t.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(format!("{place}.{key}"), "must be a string")),
        }
    };
    let repository = take(&mut t, "repository")?;
    let pre_restore = take(&mut t, "pre_restore")?;
    let post_restore = take(&mut t, "post_restore")?;
    let component = take(&mut t, "component")?;
    let kept = KeptPolicy::take(&mut t, &place, "kept_", kept_default)?;
    let checks: Vec<String> = match t.remove("checks") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                toml::Value::String(s) if !s.trim().is_empty() => Ok(s),
                _ => Err(invalid(format!("{place}.checks"), "must be a list of SQL queries")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid(format!("{place}.checks"), "must be a list of SQL queries")),
    };
    if let Some(c) = &component {
        if !COMPONENTS.contains(&c.as_str()) {
            return Err(invalid(
                format!("{place}.component"),
                format!("unknown component {c:?} (known: {})", COMPONENTS.join(", ")),
            ));
        }
    }
    let sample = match take(&mut t, "sample")? {
        None => None,
        Some(s) => {
            let pct = s.trim().strip_suffix('%').and_then(|n| n.trim().parse::<f64>().ok());
            match pct {
                Some(p) if p > 0.0 && p <= 100.0 => Some(p / 100.0),
                _ => {
                    return Err(invalid(
                        format!("{place}.sample"),
                        "must be a share like \"10%\" (more than 0%, at most 100%)",
                    ))
                }
            }
        }
    };
    let drill_server = take(&mut t, "drill_server")?;
    let mut objective = |key: &str| -> Result<Option<std::time::Duration>, ConfigError> {
        match take(&mut t, key)? {
            None => Ok(None),
            Some(s) => parse_duration(&s).map(Some).map_err(|e| invalid(format!("{place}.{key}"), e)),
        }
    };
    let (rpo, rto) = (objective("rpo")?, objective("rto")?);
    let chunk_size = match take(&mut t, "chunk_size")? {
        None => None,
        Some(s) => match super::values::parse_size(&s) {
            Ok(n) if n.is_power_of_two() && ((4 << 10)..=(4 << 20)).contains(&n) => Some(n as u32),
            _ => {
                return Err(invalid(
                    format!("{place}.chunk_size"),
                    "must be a power of two from 4KiB to 4MiB, like \"64KiB\"",
                ))
            }
        },
    };
    let kind = target_kind(&kind_name, &place, t)?;
    if sample.is_some() && !matches!(kind, TargetKind::Files(_) | TargetKind::ObjectStore(_)) {
        return Err(invalid(
            format!("{place}.sample"),
            "a drill samples files: files and object_store targets only",
        ));
    }
    match (&drill_server, &kind) {
        (None, _) => {}
        (Some(u), TargetKind::Postgres(_))
            if u.starts_with("postgres://") || u.starts_with("postgresql://") => {}
        (Some(u), TargetKind::Mysql(_)) if u.starts_with("mysql://") || u.starts_with("mariadb://") => {}
        (Some(_), TargetKind::Postgres(_) | TargetKind::Mysql(_)) => {
            return Err(invalid(
                format!("{place}.drill_server"),
                "must be a URL of the target's kind of server",
            ))
        }
        (Some(_), _) => {
            return Err(invalid(format!("{place}.drill_server"), "postgres and mysql targets only"))
        }
    }
    if !checks.is_empty()
        && !matches!(kind, TargetKind::Sqlite(_) | TargetKind::Postgres(_) | TargetKind::Mysql(_))
    {
        return Err(invalid(
            format!("{place}.checks"),
            "checks are SQL: sqlite, postgres and mysql targets only",
        ));
    }
    let given = repository.is_some();
    let repository = match repository {
        Some(r) => r,
        None if repositories.len() == 1 => repositories.keys().next().expect("one").clone(),
        // Several and none called main: a plan's `repository` may say
        // where the target goes; used without one it is an error then.
        None if repositories.len() > 1 && !repositories.contains_key("main") => String::new(),
        None => "main".to_string(),
    };
    let waiting = unresolved.iter().any(|u| u.section == "repository" && u.name == repository);
    if (given || !repository.is_empty())
        && !repositories.is_empty()
        && !repositories.contains_key(&repository)
        && !waiting
    {
        return Err(invalid(
            format!("{place}.repository"),
            format!("no repository named {repository:?} (configured: {})", join(repositories.keys())),
        ));
    }
    let component = component.unwrap_or_else(|| {
        match kind {
            TargetKind::Sqlite(_) | TargetKind::Postgres(_) | TargetKind::Mysql(_) => "database",
            _ => "data",
        }
        .to_string()
    });
    Ok(Target {
        name: tname.to_string(),
        component,
        repository,
        pre_restore,
        post_restore,
        kept,
        sample,
        drill_server,
        rpo,
        rto,
        chunk_size,
        checks,
        kind,
    })
}

/// The settings of one target type, checked.
fn target_kind(kind_name: &str, place: &str, t: toml::Table) -> Result<TargetKind, ConfigError> {
    Ok(match kind_name {
        "sqlite" => TargetKind::Sqlite(section(place, t)?),
        "postgres" | "postgresql" => {
            let mut t = t;
            pg_url_from_parts(&mut t, place)?;
            let p: PostgresTarget = section(place, t)?;
            let many = p.databases.len() > 1 || p.databases.iter().any(|d| d == "*");
            if many && !(p.tables.is_empty() && p.exclude_tables.is_empty()) {
                return Err(invalid(
                    format!("{place}.tables"),
                    "table lists apply to one database; make a target per database",
                ));
            }
            if p.jobs == 0 || p.jobs > 64 {
                return Err(invalid(format!("{place}.jobs"), "must be between 1 and 64"));
            }
            if p.jobs > 1 && !(p.tables.is_empty() && p.exclude_tables.is_empty()) {
                return Err(invalid(
                    format!("{place}.jobs"),
                    "parallel dumps take whole databases; drop tables and exclude_tables, or jobs",
                ));
            }
            if p.databases.iter().any(|d| d.is_empty() || (d == "*" && p.databases.len() > 1)) {
                return Err(invalid(
                    format!("{place}.databases"),
                    "names databases, or is [\"*\"] for all of them",
                ));
            }
            TargetKind::Postgres(p)
        }
        "mysql" | "mariadb" => TargetKind::Mysql(section(place, t)?),
        "command" => {
            let c: CommandTarget = section(place, t)?;
            if c.name.is_empty() || c.name.contains('/') || c.name == "." || c.name == ".." {
                return Err(invalid(format!("{place}.name"), "must be a plain file name"));
            }
            TargetKind::Command(c)
        }
        "object_store" => {
            let o: ObjectStoreTarget = section(place, t)?;
            if o.url.is_empty() {
                return Err(invalid(format!("{place}.url"), "must name a bucket prefix or directory"));
            }
            if let Some(f) = &o.key_date {
                // A format that cannot read back what it writes
                // would match no key.
                let sample = chrono::NaiveDate::from_ymd_opt(2025, 11, 3)
                    .and_then(|d| d.and_hms_opt(4, 5, 6))
                    .expect("a valid date");
                let items = chrono::format::StrftimeItems::new(f);
                let valid = !items.clone().any(|i| matches!(i, chrono::format::Item::Error));
                let text = valid.then(|| sample.format_with_items(items).to_string());
                let reads = text.as_deref().is_some_and(|t| {
                    chrono::NaiveDateTime::parse_from_str(t, f).is_ok()
                        || chrono::NaiveDate::parse_from_str(t, f).is_ok()
                });
                if !reads {
                    return Err(invalid(
                        format!("{place}.key_date"),
                        format!(
                            "{f:?} is not a date format that names a day (e.g. \"%Y-%m-%d\" or \"%Y%m%d\")"
                        ),
                    ));
                }
            }
            TargetKind::ObjectStore(o)
        }
        "files" => {
            let f: FilesTarget = section(place, t)?;
            if f.paths.is_empty() {
                return Err(invalid(format!("{place}.paths"), "needs at least one path"));
            }
            TargetKind::Files(f)
        }
        other => {
            return Err(invalid(
                format!("{place}.type"),
                format!(
                "unknown target type {other:?} (known: sqlite, files, postgres, mysql, command, object_store)"
            ),
            ))
        }
    })
}
