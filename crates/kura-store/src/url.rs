//! Repository URLs.
//!
//! * `/path`, `./path`, `file:///path`: a local directory
//! * `s3://bucket/prefix?endpoint=URL&region=R&style=path|virtual&sse=AES256|aws:kms&sse_kms_key_id=ID&storage_class=C`
//! * `gcs://bucket/prefix?endpoint=URL`
//! * `azblob://container/prefix?endpoint=URL&account=NAME`
//!
//! Secrets never come from the URL (it ends up in logs and `ps`); they come
//! from the standard environment variables of each cloud, read through the
//! `env` function the caller passes in.
use std::sync::Arc;

use crate::object::{AzureSettings, GcsSettings, S3Settings};
use crate::{LocalStore, OpendalStore, Result, Retry, RetryPolicy, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Local(String),
    S3 { bucket: String, prefix: String, options: Vec<(String, String)> },
    Gcs { bucket: String, prefix: String, options: Vec<(String, String)> },
    Azure { container: String, prefix: String, options: Vec<(String, String)> },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err(StoreError::config("empty repository location"));
            }
            return Ok(StoreUrl::Local(url.to_string()));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let options: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), percent_decode(v))
            })
            .collect();
        let known: &[&str] = match scheme {
            "file" => return Ok(StoreUrl::Local(rest.to_string())),
            "s3" => &["endpoint", "region", "style", "sse", "sse_kms_key_id", "storage_class"],
            "gcs" | "gs" => &["endpoint"],
            "azblob" | "az" => &["endpoint", "account"],
            other => {
                return Err(StoreError::config(format!(
                    "unknown repository scheme {other:?} (use a path, s3://, gcs:// or azblob://)"
                )))
            }
        };
        if let Some((k, _)) = options.iter().find(|(k, _)| !known.contains(&k.as_str())) {
            return Err(StoreError::config(format!(
                "unknown option {k:?} in repository URL (known: {})",
                known.join(", ")
            )));
        }
        if bucket.is_empty() {
            return Err(StoreError::config(format!("{url}: no bucket or container named")));
        }
        let (bucket, prefix) = (bucket.to_string(), prefix.trim_matches('/').to_string());
        Ok(match scheme {
            "s3" => StoreUrl::S3 { bucket, prefix, options },
            "gcs" | "gs" => StoreUrl::Gcs { bucket, prefix, options },
            _ => StoreUrl::Azure { container: bucket, prefix, options },
        })
    }
}

fn opt<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Decodes `%XX` escapes; anything else is kept as it is.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn wrap<S: Store + 'static>(s: S, policy: &RetryPolicy) -> Arc<dyn Store> {
    Arc::new(Retry::with_policy(s, policy.clone()))
}

/// Opens the store a URL names, wrapped in [`Retry`] with the default policy.
pub fn open_url(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Arc<dyn Store>> {
    open_url_with(url, env, RetryPolicy::default())
}

/// Opens the store a URL names, wrapped in [`Retry`] with `policy`.
pub fn open_url_with(
    url: &str,
    env: &dyn Fn(&str) -> Option<String>,
    policy: RetryPolicy,
) -> Result<Arc<dyn Store>> {
    Ok(match StoreUrl::parse(url)? {
        StoreUrl::Local(path) => wrap(LocalStore::new(path), &policy),
        StoreUrl::S3 { bucket, prefix, options } => {
            let s = S3Settings {
                bucket,
                prefix,
                endpoint: opt(&options, "endpoint")
                    .map(String::from)
                    .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                    .or_else(|| env("AWS_ENDPOINT_URL")),
                region: opt(&options, "region")
                    .map(String::from)
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION")),
                access_key_id: env("AWS_ACCESS_KEY_ID"),
                secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
                session_token: env("AWS_SESSION_TOKEN"),
                virtual_host: match opt(&options, "style") {
                    None | Some("path") => false,
                    Some("virtual") => true,
                    Some(other) => {
                        return Err(StoreError::config(format!(
                            "style={other:?}: use style=path or style=virtual"
                        )))
                    }
                },
                sse: opt(&options, "sse").map(String::from),
                sse_kms_key_id: opt(&options, "sse_kms_key_id").map(String::from),
                storage_class: opt(&options, "storage_class").map(String::from),
            };
            wrap(OpendalStore::s3(&s)?, &policy)
        }
        StoreUrl::Gcs { bucket, prefix, options } => {
            let s = GcsSettings {
                bucket,
                prefix,
                endpoint: opt(&options, "endpoint").map(String::from),
                credential_path: env("GOOGLE_APPLICATION_CREDENTIALS"),
                token: env("KURA_GCS_TOKEN"),
            };
            wrap(OpendalStore::gcs(&s)?, &policy)
        }
        StoreUrl::Azure { container, prefix, options } => {
            let s = AzureSettings {
                container,
                prefix,
                endpoint: opt(&options, "endpoint").map(String::from),
                account_name: opt(&options, "account")
                    .map(String::from)
                    .or_else(|| env("AZURE_STORAGE_ACCOUNT")),
                account_key: env("AZURE_STORAGE_KEY"),
                sas_token: env("AZURE_STORAGE_SAS_TOKEN"),
            };
            wrap(OpendalStore::azure(&s)?, &policy)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            StoreUrl::parse("/var/backups/kura").unwrap(),
            StoreUrl::Local("/var/backups/kura".into())
        );
        assert_eq!(StoreUrl::parse("file:///srv/k").unwrap(), StoreUrl::Local("/srv/k".into()));
        match StoreUrl::parse("s3://bkp/app/prod?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=auto").unwrap()
        {
            StoreUrl::S3 { bucket, prefix, options } => {
                assert_eq!((bucket.as_str(), prefix.as_str()), ("bkp", "app/prod"));
                assert_eq!(opt(&options, "endpoint"), Some("http://127.0.0.1:9000"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(StoreUrl::parse("gcs://b").unwrap(), StoreUrl::Gcs { .. }));
        assert!(matches!(StoreUrl::parse("azblob://c/p").unwrap(), StoreUrl::Azure { .. }));
    }

    #[test]
    fn refuses_unknown_schemes_and_options() {
        assert!(StoreUrl::parse("ftp://x/y").unwrap_err().to_string().contains("unknown repository scheme"));
        assert!(StoreUrl::parse("s3://b/p?secret=1").unwrap_err().to_string().contains("unknown option"));
        assert!(StoreUrl::parse("s3:///p").is_err());
    }

    #[test]
    fn s3_without_credentials_says_which_variables() {
        let err = open_url("s3://b/p", &|_| None).unwrap_err();
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }
}
