//! Object storage through OpenDAL: S3-compatible (AWS, R2, MinIO), GCS and
//! Azure Blob.
//!
//! Every client is built with explicit credentials and with configuration
//! files and cloud metadata lookups turned off, so that kura never talks to an
//! address the user did not name.
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::{services, Operator};

use crate::{ErrorKind, Headers, ObjectMeta, Result, Store, StoreError};

/// Objects above this size are uploaded in parts of this size.
const MULTIPART_CHUNK: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct OpendalStore {
    op: Operator,
    location: String,
}

/// Settings for an S3-compatible store.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Virtual-host style (`bucket.host`) instead of path style (`host/bucket`).
    pub virtual_host: bool,
    /// Server-side encryption asked for on every write: `AES256` or
    /// `aws:kms` (with `sse_kms_key_id`, else the account's AWS-managed key).
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// The storage class every write asks for (`STANDARD_IA`, ...).
    pub storage_class: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GcsSettings {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    /// Path of a service-account JSON file.
    pub credential_path: Option<String>,
    /// A bearer token, used as is.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AzureSettings {
    pub container: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub account_name: Option<String>,
    pub account_key: Option<String>,
    pub sas_token: Option<String>,
}

fn root_of(prefix: &str) -> String {
    format!("/{}/", prefix.trim_matches('/')).replace("//", "/")
}

impl OpendalStore {
    pub fn s3(s: &S3Settings) -> Result<OpendalStore> {
        opendal::install_default();
        let mut b = services::S3::default()
            .bucket(&s.bucket)
            .root(&root_of(&s.prefix))
            .region(s.region.as_deref().unwrap_or("us-east-1"))
            .disable_config_load()
            .disable_ec2_metadata();
        if let Some(e) = &s.endpoint {
            b = b.endpoint(e);
        }
        match (&s.access_key_id, &s.secret_access_key) {
            (Some(k), Some(secret)) => b = b.access_key_id(k).secret_access_key(secret),
            _ => {
                return Err(StoreError::config(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                ))
            }
        }
        if let Some(t) = &s.session_token {
            b = b.session_token(t);
        }
        if s.virtual_host {
            b = b.enable_virtual_host_style();
        }
        match (s.sse.as_deref(), &s.sse_kms_key_id) {
            (None, None) => {}
            (Some("AES256"), None) => b = b.server_side_encryption_with_s3_key(),
            (Some("aws:kms"), None) => b = b.server_side_encryption_with_aws_managed_kms_key(),
            (Some("aws:kms"), Some(id)) => b = b.server_side_encryption_with_customer_managed_kms_key(id),
            (Some(other), None) => {
                return Err(StoreError::config(format!("sse={other:?}: use sse=AES256 or sse=aws:kms")))
            }
            (_, Some(_)) => {
                return Err(StoreError::config("sse_kms_key_id needs sse=aws:kms"));
            }
        }
        if let Some(c) = &s.storage_class {
            const CLASSES: &[&str] = &[
                "STANDARD",
                "STANDARD_IA",
                "ONEZONE_IA",
                "INTELLIGENT_TIERING",
                "GLACIER_IR",
                "GLACIER",
                "DEEP_ARCHIVE",
                "REDUCED_REDUNDANCY",
                "EXPRESS_ONEZONE",
            ];
            if !CLASSES.contains(&c.as_str()) {
                return Err(StoreError::config(format!(
                    "storage_class={c:?}: use one of {}",
                    CLASSES.join(", ")
                )));
            }
            b = b.default_storage_class(c);
        }
        let op = Operator::new(b).map_err(|e| StoreError::config(e.to_string()))?;
        Ok(OpendalStore { op, location: format!("s3://{}/{}", s.bucket, s.prefix.trim_matches('/')) })
    }

    pub fn gcs(s: &GcsSettings) -> Result<OpendalStore> {
        opendal::install_default();
        let mut b = services::Gcs::default()
            .bucket(&s.bucket)
            .root(&root_of(&s.prefix))
            .disable_config_load()
            .disable_vm_metadata();
        if let Some(e) = &s.endpoint {
            b = b.endpoint(e);
        }
        match (&s.credential_path, &s.token) {
            (_, Some(t)) => b = b.token(t.clone()),
            (Some(p), None) => b = b.credential_path(p),
            (None, None) => {
                return Err(StoreError::config(
                    "no GCS credentials: set GOOGLE_APPLICATION_CREDENTIALS or KURA_GCS_TOKEN",
                ))
            }
        }
        let op = Operator::new(b).map_err(|e| StoreError::config(e.to_string()))?;
        Ok(OpendalStore { op, location: format!("gcs://{}/{}", s.bucket, s.prefix.trim_matches('/')) })
    }

    pub fn azure(s: &AzureSettings) -> Result<OpendalStore> {
        opendal::install_default();
        let mut b = services::Azblob::default().container(&s.container).root(&root_of(&s.prefix));
        let account = s
            .account_name
            .as_deref()
            .ok_or_else(|| StoreError::config("no Azure account: set AZURE_STORAGE_ACCOUNT"))?;
        b = b.account_name(account);
        let endpoint =
            s.endpoint.clone().unwrap_or_else(|| format!("https://{account}.blob.core.windows.net"));
        b = b.endpoint(&endpoint);
        match (&s.account_key, &s.sas_token) {
            (Some(k), _) => b = b.account_key(k),
            (None, Some(t)) => b = b.sas_token(t),
            (None, None) => {
                return Err(StoreError::config(
                    "no Azure credentials: set AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN",
                ))
            }
        }
        let op = Operator::new(b).map_err(|e| StoreError::config(e.to_string()))?;
        Ok(OpendalStore { op, location: format!("azblob://{}/{}", s.container, s.prefix.trim_matches('/')) })
    }
}

fn map_err(op: &'static str, key: &str, e: opendal::Error) -> StoreError {
    use opendal::ErrorKind as K;
    let kind = match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists | K::ConditionNotMatch => ErrorKind::AlreadyExists,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::ConfigInvalid | K::Unsupported => ErrorKind::Config,
        K::RateLimited => ErrorKind::Transient,
        _ if e.is_temporary() => ErrorKind::Transient,
        // A connection refused or reset surfaces as Unexpected without the
        // temporary flag on some services; retrying is the right call.
        K::Unexpected => ErrorKind::Transient,
        _ => ErrorKind::Other,
    };
    StoreError::new(kind, op, key, concise(&e))
}

/// OpenDAL's own rendering carries the whole HTTP exchange; users need the
/// service's verdict, and the network cause when there is one.
fn concise(e: &opendal::Error) -> String {
    let raw = e.message();
    let field = |name: &str| {
        let start = raw.find(name)? + name.len();
        let end = raw[start..].find('"')?;
        Some(raw[start..start + end].to_string())
    };
    let mut msg = match (field("code: \""), field("message: \"")) {
        (Some(code), Some(message)) if !code.is_empty() => format!("{code}: {message}"),
        _ => raw.to_string(),
    };
    // The root cause is the telling part ("Connection refused").
    let mut src = std::error::Error::source(e);
    let mut root = None;
    while let Some(s) = src {
        root = Some(s.to_string());
        src = s.source();
    }
    if let Some(r) = root {
        msg = format!("{msg}: {r}");
    }
    format!("{} ({})", msg, e.kind())
}

#[async_trait]
impl Store for OpendalStore {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_typed(key, data, "application/octet-stream").await
    }

    async fn put_typed(&self, key: &str, data: Bytes, content_type: &str) -> Result<()> {
        self.put_with(key, data, content_type, &Headers::default()).await
    }

    async fn put_with(&self, key: &str, data: Bytes, content_type: &str, h: &Headers) -> Result<()> {
        crate::check_key(key)?;
        let len = data.len();
        let cap = self.op.info().capability();
        let mut w = self.op.write_with(key, data).content_type(content_type);
        if let (Some(v), true) = (&h.content_encoding, cap.write_with_content_encoding) {
            w = w.content_encoding(v);
        }
        if let (Some(v), true) = (&h.content_disposition, cap.write_with_content_disposition) {
            w = w.content_disposition(v);
        }
        if let (Some(v), true) = (&h.cache_control, cap.write_with_cache_control) {
            w = w.cache_control(v);
        }
        if !h.metadata.is_empty() && cap.write_with_user_metadata {
            w = w.user_metadata(h.metadata.clone());
        }
        let w = if len > MULTIPART_CHUNK { w.chunk(MULTIPART_CHUNK) } else { w };
        w.await.map(|_| ()).map_err(|e| map_err("put", key, e))
    }

    async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        crate::check_key(key)?;
        // Conditional writes go in one request: multipart uploads do not all
        // carry the precondition on every service.
        self.op
            .write_with(key, data)
            .content_type("application/octet-stream")
            .if_not_exists(true)
            .await
            .map(|_| ())
            .map_err(|e| map_err("put_new", key, e))
    }

    fn unkept_headers(&self, h: &Headers) -> Vec<&'static str> {
        let cap = self.op.info().capability();
        let mut v = Vec::new();
        if h.content_encoding.is_some() && !cap.write_with_content_encoding {
            v.push("Content-Encoding");
        }
        if h.content_disposition.is_some() && !cap.write_with_content_disposition {
            v.push("Content-Disposition");
        }
        if h.cache_control.is_some() && !cap.write_with_cache_control {
            v.push("Cache-Control");
        }
        if !h.metadata.is_empty() && !cap.write_with_user_metadata {
            v.push("user metadata");
        }
        v
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        crate::check_key(key)?;
        self.op.read(key).await.map(|b| b.to_bytes()).map_err(|e| map_err("get", key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        crate::check_key(key)?;
        let want = range.end - range.start;
        let got = self
            .op
            .read_with(key)
            .range(range.clone())
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| map_err("get_range", key, e))?;
        if got.len() as u64 != want {
            // A short body is a truncated transfer or a range past the end;
            // either way the caller must not use it.
            return Err(StoreError::new(
                ErrorKind::Transient,
                "get_range",
                key,
                format!("got {} of {want} bytes for {range:?}", got.len()),
            ));
        }
        Ok(got)
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        crate::check_key(key)?;
        let m = self.op.stat(key).await.map_err(|e| map_err("stat", key, e))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: m.content_length(),
            modified: seconds(&m),
            content_type: m.content_type().map(String::from),
            headers: Headers {
                content_encoding: m.content_encoding().map(String::from),
                content_disposition: m.content_disposition().map(String::from),
                cache_control: m.cache_control().map(String::from),
                metadata: m
                    .user_metadata()
                    .map(|u| u.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
                    .unwrap_or_default(),
            },
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        crate::check_prefix(prefix)?;
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(map_err("list", prefix, e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.metadata().is_dir() {
                continue;
            }
            let m = e.metadata();
            out.push(ObjectMeta {
                key: e.path().trim_start_matches('/').to_string(),
                size: m.content_length(),
                modified: seconds(m),
                content_type: None,
                headers: Headers::default(),
            });
        }
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        crate::check_key(key)?;
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(map_err("delete", key, e)),
        }
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

fn seconds(m: &opendal::Metadata) -> Option<i64> {
    m.last_modified().map(|t| t.into_inner().as_second())
}
