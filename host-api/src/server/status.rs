//! Engine errors as gRPC statuses, with the standard codes a client can
//! act on.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use orchestrator_engine::plugin::InstallError;
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::executions::ExecutionError;

/// When a client refused for the host's capacity may try again.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The status for `error`: RESOURCE_EXHAUSTED carries which limit
/// (`google.rpc.QuotaFailure`) and, when waiting helps, when to try again
/// (`google.rpc.RetryInfo`).
pub fn of(error: ServiceError) -> Status {
    let message = error.to_string();
    match error {
        ServiceError::Workflow(_) | ServiceError::Inputs(_) | ServiceError::Read { .. } => {
            Status::invalid_argument(message)
        }
        ServiceError::Conflict(_) => Status::already_exists(message),
        ServiceError::NotFound(_) => Status::not_found(message),
        ServiceError::Quota(refusal) => {
            let mut details = ErrorDetails::new();
            details.add_quota_failure_violation(format!("quotas.{}", refusal.limit), &message);
            if let Some(wait) = refusal.retry_after {
                details.set_retry_info(Some(wait));
            }
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        ServiceError::Busy(busy) => {
            let limit = if busy.tenant.is_some() {
                "capacity.per_tenant.queued_runs"
            } else {
                "capacity.queued_runs"
            };
            let mut details = ErrorDetails::new();
            details.add_quota_failure_violation(limit, &message);
            // Executions end all the time: a moment later there is room.
            details.set_retry_info(Some(BUSY_RETRY));
            Status::with_error_details(Code::ResourceExhausted, message, details)
        }
        ServiceError::Execution(e) => match e {
            // Its location is the server's business, not the caller's.
            ExecutionError::Unknown { id, .. } => Status::not_found(format!("no execution `{id}`")),
            ExecutionError::Exists(_) => Status::already_exists(message),
            ExecutionError::Busy(_) | ExecutionError::LeaseLost { .. } => {
                Status::failed_precondition(message)
            }
            _ => Status::internal(message),
        },
        ServiceError::Plugin(_) => Status::failed_precondition(message),
        ServiceError::Install(e) => match e {
            InstallError::Invalid { .. } => Status::invalid_argument(message),
            InstallError::Conflict { .. } => Status::already_exists(message),
            InstallError::OverQuota { limit, .. } => {
                // Waiting does not help: something must be removed.
                let mut details = ErrorDetails::new();
                details.add_quota_failure_violation(format!("quotas.{limit}"), &message);
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            InstallError::Store(_) => Status::internal(message),
        },
        ServiceError::Sandbox(_) | ServiceError::Store(_) => Status::internal(message),
    }
}
