//! Command numbers of the legacy protocol.

/// Backend heartbeat ("Monitor").
pub const HEARTBEAT: u16 = 0;
/// Error reply to a login.
pub const ERROR: u16 = 1;
/// Client login request, and the success reply to it.
pub const LOGIN: u16 = 2;
/// Present in the original, meaningless to the balancer: skipped.
pub const REGISTER: u16 = 3;
/// Present in the original, meaningless to the balancer: skipped.
pub const DESTROY: u16 = 4;
