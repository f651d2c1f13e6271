//! Engine errors as gRPC statuses, with the standard codes a client can
//! act on.

use tonic::Status;

use orchestrator_engine::plugin::InstallError;
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::executions::ExecutionError;

/// The status for `error`.
pub fn of(error: ServiceError) -> Status {
    let message = error.to_string();
    match error {
        ServiceError::Workflow(_) | ServiceError::Inputs(_) | ServiceError::Read { .. } => {
            Status::invalid_argument(message)
        }
        ServiceError::Conflict(_) => Status::already_exists(message),
        ServiceError::NotFound(_) => Status::not_found(message),
        ServiceError::Busy(_) | ServiceError::Quota(_) => Status::resource_exhausted(message),
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
            InstallError::OverQuota { .. } => Status::resource_exhausted(message),
            InstallError::Store(_) => Status::internal(message),
        },
        ServiceError::Sandbox(_) | ServiceError::Store(_) => Status::internal(message),
    }
}
