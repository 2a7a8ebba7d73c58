//! Kernel struct offsets handed to the programs (see `wiretrail_common::KernelOffsets`).
use wiretrail_common::KernelOffsets;

use super::btf::{Btf, BtfError};

/// Computes every offset the programs need; the first missing member is an error.
pub fn compute(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let sk_common = |f: &str| btf.member_offset("sock", &format!("__sk_common.{f}"));
    // 6.13 replaced `f_count` (count of references) by `f_ref` (biased: 0 = one).
    let (file_refcnt, file_last_ref) = match btf.member_offset("file", "f_ref.refcnt") {
        Ok(off) => (off, 0),
        Err(_) => (btf.member_offset("file", "f_count")?, 1),
    };
    Ok(KernelOffsets {
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdt_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdt_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        skc_family: sk_common("skc_family")?,
        skc_daddr: sk_common("skc_daddr")?,
        skc_rcv_saddr: sk_common("skc_rcv_saddr")?,
        skc_dport: sk_common("skc_dport")?,
        skc_num: sk_common("skc_num")?,
        skc_v6_daddr: sk_common("skc_v6_daddr")?,
        skc_v6_rcv_saddr: sk_common("skc_v6_rcv_saddr")?,
        skc_net: btf.member_offset("sock", "__sk_common.skc_net.net")?,
        net_inum: btf.member_offset("net", "ns.inum")?,
        sk_protocol: btf.member_offset("sock", "sk_protocol")?,
        file_refcnt,
        file_last_ref,
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_exe_file: btf.member_offset("mm_struct", "exe_file")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        inode_sb: btf.member_offset("inode", "i_sb")?,
        sb_dev: btf.member_offset("super_block", "s_dev")?,
        _pad0: 0,
    })
}
