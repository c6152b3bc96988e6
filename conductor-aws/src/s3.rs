//! Archives off the Salt master: uploads a run's tarball to S3.

use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use conductor_core::{BackendError, BackendErrorKind};
use tracing::{info_span, Instrument};

use crate::config::AwsConfig;
use crate::errors::classify;

/// Server-side encryption of an uploaded archive (it holds the run's
/// provider file, credentials included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Sse {
    /// SSE-S3: `x-amz-server-side-encryption: AES256`.
    #[default]
    Aes256,
    /// SSE-KMS with the bucket's default key, or `key_id`.
    Kms {
        /// KMS key id or ARN; the account's `aws/s3` key when `None`.
        key_id: Option<String>,
    },
}

/// An `s3://bucket/prefix` destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/`), possibly empty.
    pub prefix: String,
}

impl S3Url {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<Self, conductor_core::InputError> {
        let bad = |why: &str| conductor_core::InputError::invalid("--to", url, why);
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let ok = bucket.len() >= 3
            && bucket.len() <= 63
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !ok {
            return Err(bad("has no valid bucket name; use s3://bucket/prefix"));
        }
        if prefix.split('/').any(|p| p == "..") {
            return Err(bad("must not hold '..'"));
        }
        Ok(Self {
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').into(),
        })
    }

    /// The object key of `file_name` under the prefix.
    pub fn key(&self, file_name: &str) -> String {
        if self.prefix.is_empty() {
            file_name.into()
        } else {
            format!("{}/{file_name}", self.prefix)
        }
    }
}

/// Uploads `file` to `to` through `endpoint_url` (else `AWS_ENDPOINT_URL`,
/// else AWS), encrypted at rest with `sse`; returns `s3://bucket/key`.
pub async fn upload(
    file: &Path,
    to: &S3Url,
    endpoint_url: Option<&str>,
    sse: &Sse,
) -> Result<String, BackendError> {
    let mut aws = AwsConfig::new();
    if let Some(url) = endpoint_url {
        aws = aws.endpoint_url(url);
    }
    upload_with(file, to, &aws, sse).await
}

/// Uploads `file` to `to` with the connection `aws`, encrypted at rest with
/// `sse`; returns `s3://bucket/key`.
pub async fn upload_with(
    file: &Path,
    to: &S3Url,
    aws: &AwsConfig,
    sse: &Sse,
) -> Result<String, BackendError> {
    let sdk = aws.load().await;
    // Path-style addressing works with every endpoint (moto, MinIO, AWS).
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("archive.tar.gz");
    let key = to.key(name);
    let body = ByteStream::from_path(file)
        .await
        .map_err(|e| BackendError::new(BackendErrorKind::Io, format!("{}: {e}", file.display())))?;
    let put = client
        .put_object()
        .bucket(&to.bucket)
        .key(&key)
        .body(body)
        .content_type("application/gzip");
    let put = match sse {
        Sse::Aes256 => put.server_side_encryption(ServerSideEncryption::Aes256),
        Sse::Kms { key_id } => put
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(key_id.clone()),
    };
    put.send()
        .instrument(info_span!("s3.put_object", bucket = %to.bucket, %key))
        .await
        .map_err(|e| {
            classify(
                "PutObject",
                &format!("uploading {} to s3://{}/{key}", file.display(), to.bucket),
                e,
            )
        })?;
    Ok(format!("s3://{}/{key}", to.bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            S3Url::parse("s3://runs/conductor/").unwrap(),
            S3Url {
                bucket: "runs".into(),
                prefix: "conductor".into()
            }
        );
        assert_eq!(S3Url::parse("s3://runs").unwrap().key("a.tgz"), "a.tgz");
        for bad in ["runs/x", "s3://", "s3://A_B/x", "s3://runs/../x"] {
            assert!(S3Url::parse(bad).is_err(), "{bad}");
        }
    }
}
