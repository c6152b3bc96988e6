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
];

/// Maps an SDK error of operation `op` (while doing `what`) to a
/// [`BackendError`]: throttling -> `Throttled`; network, timeouts and 5xx ->
/// `Unreachable`; other service errors (bad AMI, unknown subnet, auth) ->
/// `Rejected`, with AWS's code and message.
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
        SdkError::DispatchFailure(d) => (
            BackendErrorKind::Unreachable,
            format!(
                "could not reach the endpoint ({}); check the network, the region and --endpoint-url",
                d.as_connector_error()
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "dispatch failure".into())
            ),
        ),
        SdkError::ResponseError(_) => (BackendErrorKind::Unreachable, "unreadable response".to_string()),
        SdkError::ConstructionFailure(_) => {
            (BackendErrorKind::Rejected, format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e)))
        }
        _ => (BackendErrorKind::Unreachable, format!("{}", aws_sdk_ec2::error::DisplayErrorContext(&e))),
    };
    BackendError::new(kind, format!("{op} failed while {what}: {detail}"))
}
