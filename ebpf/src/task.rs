//! Per-thread storage (`BPF_MAP_TYPE_TASK_STORAGE`).
//!
//! aya-ebpf 0.2.1 has BTF map definitions for socket, inode and cgroup
//! storage but none for task storage; this is the same definition (a BTF map
//! in `.maps`, which the kernel requires for local storage) with the task
//! helpers. A value lives in the task itself: a lookup is a pointer chase
//! instead of a hash, nothing is inserted or deleted per call, and the kernel
//! frees it when the thread exits (no stale entries, no capacity to run out).
use core::{ffi::c_void, ptr};

use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get};

const BPF_MAP_TYPE_TASK_STORAGE: usize = 29;
const BPF_F_NO_PREALLOC: usize = 1;
const BPF_LOCAL_STORAGE_GET_F_CREATE: u64 = 1;

/// Field layout read by the loader from BTF (see aya-ebpf's `btf_map_def!`).
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC],
}

// SAFETY: the fields are placeholders the loader reads from BTF; never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The current thread's value; created zeroed when `create` and missing.
    /// `None` when missing (or, with `create`, when the kernel could not
    /// allocate it or refused a nested use).
    #[inline(always)]
    pub fn current(&self, create: bool) -> Option<*mut T> {
        let flags = if create { BPF_LOCAL_STORAGE_GET_F_CREATE } else { 0 };
        let p = unsafe {
            bpf_task_storage_get(
                ptr::from_ref(self).cast_mut().cast::<c_void>(),
                bpf_get_current_task_btf(),
                ptr::null_mut(),
                flags,
            )
        };
        if p.is_null() { None } else { Some(p.cast::<T>()) }
    }
}
