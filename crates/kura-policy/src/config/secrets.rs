//! Secrets written out in a config file, found by where they are (a
//! password in a URL, a key named like a secret), never by their value.

/// Where a config's text holds a secret written out rather than taken from
/// the environment: a URL with a password in it (`mysql://app:pw@db/shop`),
/// or a key named like a secret (`password`, `secret…`, `…token`, `…_key`)
/// with a literal value, or a query parameter named like one (`?token=`),
/// or the URL of a notification channel, whose path is its secret (a Slack
/// webhook, a healthchecks ping: whoever has it can post). `${VAR}` references are not secrets in the file.
/// Places are named as in error messages (`target.shop.url`); the secret
/// itself never appears in what this returns. Text that does not parse has
/// no places: loading it reports the syntax error instead.
pub fn literal_secrets(text: &str) -> Vec<String> {
    fn walk(v: &toml::Value, place: &str, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let here = if place.is_empty() { k.clone() } else { format!("{place}.{k}") };
                    if let toml::Value::String(s) = v {
                        let capability = place.starts_with("notify.") && k == "url";
                        if !s.contains("${")
                            && !s.is_empty()
                            && (secret_key(k) || url_password(s) || capability)
                        {
                            out.push(here.clone());
                        }
                    }
                    walk(v, &here, out);
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{place}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        // `password_file` and `password_command` name where a secret is.
        !k.ends_with("_file")
            && !k.ends_with("_command")
            && (k.contains("password") || k.contains("secret") || k.ends_with("token") || k.ends_with("_key"))
    }
    fn secret_param(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        ["password", "token", "secret", "key", "sig", "signature", "apikey", "api_key", "access_token"]
            .iter()
            .any(|s| k == *s || k.ends_with(&format!("_{s}")) || k.ends_with(&format!("-{s}")))
    }
    fn url_password(s: &str) -> bool {
        let Some((_, rest)) = s.split_once("://") else { return false };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let in_userinfo = authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()));
        // libpq and the MySQL tools also take `?password=` in the query;
        // webhooks and gateways take tokens and signatures there.
        let in_query = rest.split_once('?').is_some_and(|(_, q)| {
            q.split(['&', '#'])
                .any(|kv| kv.split_once('=').is_some_and(|(k, v)| !v.is_empty() && secret_param(k)))
        });
        in_userinfo || in_query
    }
    let mut out = Vec::new();
    if let Ok(root) = text.parse::<toml::Table>() {
        walk(&toml::Value::Table(root), "", &mut out);
    }
    out
}
