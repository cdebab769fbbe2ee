//! Declarations of csrc/shim.cpp's C ABI. Every function that can fail returns null on success
//! or a malloc'ed message to free with `lkd_free_message`.

use std::os::raw::{c_char, c_int, c_void};

/// Opaque handle to the shim's store + backend pair.
#[repr(C)]
pub struct LkdPg {
    _private: [u8; 0],
}

extern "C" {
    pub fn lkd_free_message(message: *mut c_char);
    pub fn lkd_has_nccl() -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn lkd_pg_new(
        backend: c_int,
        master_addr: *const c_char,
        master_port: c_int,
        rank: c_int,
        world_size: c_int,
        cuda_device: c_int,
        timeout_ms: i64,
        out: *mut *mut LkdPg,
    ) -> *mut c_char;
    pub fn lkd_pg_free(pg: *mut LkdPg);
    pub fn lkd_pg_broadcast(pg: *mut LkdPg, tensor: *const c_void, root: c_int) -> *mut c_char;
    pub fn lkd_pg_allreduce(pg: *mut LkdPg, tensor: *const c_void, op: c_int) -> *mut c_char;
    pub fn lkd_pg_barrier(pg: *mut LkdPg) -> *mut c_char;
    pub fn lkd_set_grad(param: *const c_void, grad: *const c_void) -> *mut c_char;
    pub fn lkd_set_autocast_dtype(device: c_int, dtype: c_int) -> *mut c_char;
    pub fn lkd_get_autocast_dtype(device: c_int, dtype: *mut c_int) -> *mut c_char;
    pub fn lkd_autocast_enter(device: c_int, previous: *mut c_int) -> *mut c_char;
    pub fn lkd_autocast_exit(device: c_int, previous: c_int) -> *mut c_char;
}
