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

/// What must be under an archive's key for an upload to replace it: the
/// object read before packing (its ETag), or none. An upload whose
/// expectation no longer holds fails (`PreconditionFailed`, S3's
/// conditional writes) and changes nothing, so an archive is never
/// replaced by one that did not merge it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// No object under the key (`If-None-Match: *`).
    Absent,
    /// The object of this ETag (`If-Match`).
    ETag(String),
}

/// An S3 client for archives, on the connection `aws`.
async fn client(aws: &AwsConfig) -> aws_sdk_s3::Client {
    let sdk = aws.load().await;
    // Path-style addressing works with every endpoint (moto, MinIO, AWS).
    let conf = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Downloads the archive named `name` under `from`, when there is one, to
/// `dest` (created mode 0600; it holds the run's provider file); returns
/// what an upload replacing it must expect: its ETag, or
/// [`Expect::Absent`] (and no file written) when the key holds nothing.
pub async fn download_with(
    from: &S3Url,
    name: &str,
    dest: &Path,
    aws: &AwsConfig,
) -> Result<Expect, BackendError> {
    let key = from.key(name);
    let what = || format!("reading s3://{}/{key}", from.bucket);
    let got = client(aws)
        .await
        .get_object()
        .bucket(&from.bucket)
        .key(&key)
        .send()
        .instrument(info_span!("s3.get_object", bucket = %from.bucket, %key))
        .await;
    let got = match got {
        Ok(got) => got,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
            return Ok(Expect::Absent)
        }
        // S3 answers AccessDenied for a missing key to a caller without
        // s3:ListBucket: expecting none is still safe, as an upload then
        // replaces nothing (an object there makes it fail).
        Err(e) if e.as_service_error().and_then(|e| e.meta().code()) == Some("AccessDenied") => {
            tracing::warn!(
                bucket = %from.bucket,
                %key,
                "AccessDenied reading the archive already on S3: uploading only if there is none \
                 (merging one needs s3:GetObject, and s3:ListBucket tells a missing one from a \
                 forbidden one)"
            );
            return Ok(Expect::Absent);
        }
        Err(e) => return Err(classify("GetObject", &what(), e)),
    };
    let etag = got.e_tag().map(str::to_string).ok_or_else(|| {
        BackendError::new(
            BackendErrorKind::Rejected,
            format!("{}: the answer has no ETag", what()),
        )
    })?;
    let io = |e: std::io::Error| BackendError::io(dest, e);
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .await
        .map_err(io)?;
    let mut body = got.body.into_async_read();
    tokio::io::copy(&mut body, &mut file).await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(Expect::ETag(etag))
}

/// Uploads `file` to `to` with the connection `aws`, encrypted at rest with
/// `sse`, only when what is under its key is what `expect` says; returns
/// `s3://bucket/key`.
pub async fn upload_with(
    file: &Path,
    to: &S3Url,
    aws: &AwsConfig,
    sse: &Sse,
    expect: &Expect,
) -> Result<String, BackendError> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("archive.tar.gz");
    let key = to.key(name);
    let body = ByteStream::from_path(file)
        .await
        .map_err(|e| BackendError::new(BackendErrorKind::Io, format!("{}: {e}", file.display())))?;
    let put = client(aws)
        .await
        .put_object()
        .bucket(&to.bucket)
        .key(&key)
        .body(body)
        .content_type("application/gzip");
    let put = match expect {
        Expect::Absent => put.if_none_match("*"),
        Expect::ETag(etag) => put.if_match(etag),
    };
    let put = match sse {
        Sse::Aes256 => put.server_side_encryption(ServerSideEncryption::Aes256),
        Sse::Kms { key_id } => put
            .server_side_encryption(ServerSideEncryption::AwsKms)
            .set_ssekms_key_id(key_id.clone()),
    };
    let at = format!("s3://{}/{key}", to.bucket);
    put.send()
        .instrument(info_span!("s3.put_object", bucket = %to.bucket, %key))
        .await
        .map_err(|e| {
            let changed = e.raw_response().is_some_and(|r| r.status().as_u16() == 412);
            let mut e = classify(
                "PutObject",
                &format!("uploading {} to {at}", file.display()),
                e,
            );
            if changed {
                e.message.push_str(&match expect {
                    Expect::Absent => format!(
                        "; an object is already at {at} (another archive of this run since it \
                         was looked for, or one this user may not read), so it was left as it \
                         is: run the archive again to merge it (needs s3:GetObject)"
                    ),
                    Expect::ETag(_) => format!(
                        "; {at} changed after it was read (another archive of this run at the \
                         same time?), so it was left as it is: run the archive again to merge both"
                    ),
                });
            }
            e
        })?;
    Ok(at)
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
