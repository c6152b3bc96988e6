//! SDK errors (EC2, DynamoDB) mapped to [`BackendError`] kinds.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use conductor_core::{BackendError, BackendErrorKind};

/// Error codes AWS uses for rate limiting.
const THROTTLING: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "SlowDown",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    // DynamoDB: the item is part of another transaction in flight (a write
    // on it now fails; the same write a moment later does not).
    "TransactionConflictException",
    "TransactionInProgressException",
];

/// `e` and its sources, `: `-separated, each once (wrappers often repeat
/// their source's text).
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = err.source();
    }
    parts.join(": ")
}

/// Maps an SDK error of operation `op` (while doing `what`) to a
/// [`BackendError`]: throttling -> `Throttled`; network, timeouts and 5xx ->
/// `Unreachable`; other service errors (bad AMI, unknown subnet, auth) and
/// an endpoint whose TLS certificate is refused -> `Rejected`, with AWS's
/// code and message or the TLS cause.
pub fn classify<E>(op: &str, what: &str, e: SdkError<E>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let (kind, detail) = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_string();
            let msg = se.err().message().unwrap_or("").to_string();
            let kind = if THROTTLING.contains(&code.as_str()) {
                BackendErrorKind::Throttled
            } else if status.is_some_and(|s| s >= 500) {
                BackendErrorKind::Unreachable
            } else {
                BackendErrorKind::Rejected
            };
            (kind, format!("{code}: {msg}"))
        }
        SdkError::TimeoutError(_) => (BackendErrorKind::Unreachable, "timed out".to_string()),
        SdkError::DispatchFailure(d) => {
            let cause = d
                .as_connector_error()
                .map(|c| causes(c))
                .unwrap_or_else(|| "dispatch failure".into());
            if cause.to_ascii_lowercase().contains("certificate") {
                (
                    BackendErrorKind::Rejected,
                    format!(
                        "the endpoint's TLS certificate was refused ({cause}); if a private CA \
                         signs it, add the CA to the system's root certificates or point \
                         SSL_CERT_FILE at a PEM bundle that holds it"
                    ),
                )
            } else {
                (
                    BackendErrorKind::Unreachable,
                    format!(
                        "could not reach the endpoint ({cause}); check the network, the region and --endpoint-url"
                    ),
                )
            }
        }
        SdkError::ResponseError(_) => (
            BackendErrorKind::Unreachable,
            "unreadable response".to_string(),
        ),
        SdkError::ConstructionFailure(_) => (
            BackendErrorKind::Rejected,
            format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e)),
        ),
        _ => (
            BackendErrorKind::Unreachable,
            format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e)),
        ),
    };
    BackendError::new(kind, format!("{op} failed while {what}: {detail}"))
}
