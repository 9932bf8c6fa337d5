"""dockerd's default seccomp policy, written as data. Pure constants: no imports of the engine.

Who may make which system call, by purpose: :data:`SYSCALL_GROUPS` (everyone),
:data:`CAPABILITY_SYSCALLS` (the holders of a capability), :data:`ARG_RULES` (a call allowed for
some arguments only), :data:`FROM_KERNEL`, :data:`ARCH_SYSCALLS` and :data:`ARCH_FAMILIES` (the
machine). :mod:`asyncstart.seccomp` turns them into a profile and resolves it per container.

Everything else is refused with EPERM. What would let a process leave its container or reach the
host's kernel state (mounting, namespaces, modules, the clock, keyrings, ``io_uring``, tracing
before kernel 4.8...) is allowed only with the capability that guards it, so ``--cap-add`` means
the same with and without the filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ARCH_FAMILIES",
    "ARCH_SYSCALLS",
    "ARG_RULES",
    "CAPABILITY_SYSCALLS",
    "DEFAULT_ERRNO",
    "ENOSYS",
    "ENOSYS_UNLESS",
    "EPERM",
    "FROM_KERNEL",
    "SYSCALL_GROUPS",
    "ArgRule",
]

EPERM: Final = 1
ENOSYS: Final = 38
#: What a refused system call returns under the default profile (dockerd: ``defaultErrnoRet``).
DEFAULT_ERRNO: Final = EPERM


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: System calls every container may make, by purpose. Names the kernel or libseccomp does not
#: know on an architecture are skipped by runc, so 32-bit and ``*_time64`` variants sit beside
#: the 64-bit calls they mirror.
SYSCALL_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    # Opening, reading, writing, seeking and closing descriptors; moving data between them.
    "descriptors": _names("""
        open openat openat2 creat close close_range read readv pread64 preadv preadv2
        write writev pwrite64 pwritev pwritev2 lseek _llseek dup dup2 dup3 fcntl fcntl64
        ioctl flock pipe pipe2 splice tee vmsplice sendfile sendfile64 copy_file_range
        readahead fadvise64 fadvise64_64 fallocate cachestat
    """),
    # Making data durable and changing a file's length.
    "file data": _names("""
        fsync fdatasync sync syncfs sync_file_range truncate truncate64 ftruncate ftruncate64
    """),
    # Reading and changing a file's metadata (owners and modes are still checked by the kernel
    # against the process's capabilities).
    "file metadata": _names("""
        stat stat64 lstat lstat64 fstat fstat64 fstatat64 newfstatat statx statfs statfs64
        fstatfs fstatfs64 access faccessat faccessat2 chmod fchmod fchmodat fchmodat2 chown
        chown32 fchown fchown32 lchown lchown32 fchownat umask utime utimes utimensat
        utimensat_time64 futimesat readlink readlinkat name_to_handle_at
    """),
    # The directory tree: names, links, nodes (device nodes need CAP_MKNOD and the device
    # cgroup), the working directory.
    "directories": _names("""
        mkdir mkdirat rmdir rename renameat renameat2 link linkat symlink symlinkat unlink
        unlinkat mknod mknodat chdir fchdir getcwd getdents getdents64
    """),
    # Extended attributes.
    "xattrs": _names("""
        getxattr lgetxattr fgetxattr getxattrat setxattr lsetxattr fsetxattr setxattrat
        listxattr llistxattr flistxattr listxattrat removexattr lremovexattr fremovexattr
        removexattrat
    """),
    # Waiting for descriptors, signals, timers and file changes.
    "events": _names("""
        select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create
        epoll_create1 epoll_ctl epoll_ctl_old epoll_wait epoll_wait_old epoll_pwait epoll_pwait2
        eventfd eventfd2 signalfd signalfd4 timerfd_create timerfd_settime timerfd_settime64
        timerfd_gettime timerfd_gettime64 inotify_init inotify_init1 inotify_add_watch
        inotify_rm_watch fanotify_mark
    """),
    # Linux AIO (io_uring is left out: its own way around this filter).
    "async io": _names("""
        io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
    """),
    # The address space: mappings, protection, locking, shared and sealed memory.
    "memory": _names("""
        brk mmap mmap2 munmap mremap mprotect madvise mincore msync remap_file_pages mlock
        mlock2 mlockall munlock munlockall membarrier memfd_create memfd_secret pkey_alloc
        pkey_free pkey_mprotect map_shadow_stack mseal
    """),
    # Processes and threads: creating (``clone`` has its own rule), running, waiting, futexes,
    # ids and sessions, thread-local storage, process descriptors.
    "processes": _names("""
        fork vfork execve execveat exit exit_group wait4 waitid waitpid set_tid_address
        set_robust_list get_robust_list futex futex_time64 futex_wait futex_wake futex_requeue
        futex_waitv rseq gettid getpid getppid getpgid setpgid getpgrp getsid setsid
        set_thread_area get_thread_area restart_syscall pidfd_open pidfd_send_signal
        process_mrelease getcpu uretprobe
    """),
    # Signals.
    "signals": _names("""
        kill tkill tgkill rt_sigaction rt_sigprocmask rt_sigpending rt_sigqueueinfo
        rt_tgsigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
        sigaltstack sigprocmask sigreturn pause alarm
    """),
    # Clocks and timers. Reading is harmless; ``adjtimex``/``clock_adjtime`` only set the
    # clock with CAP_SYS_TIME (the kernel checks), the calls that only set it are in that row.
    "time": _names("""
        time gettimeofday clock_gettime clock_gettime64 clock_getres clock_getres_time64
        clock_nanosleep clock_nanosleep_time64 nanosleep adjtimex clock_adjtime clock_adjtime64
        getitimer setitimer timer_create timer_delete timer_getoverrun timer_gettime
        timer_gettime64 timer_settime timer_settime64 times
    """),
    # Scheduling and priorities of the container's own processes.
    "scheduling": _names("""
        sched_yield sched_getaffinity sched_setaffinity sched_getattr sched_setattr
        sched_getparam sched_setparam sched_getscheduler sched_setscheduler
        sched_get_priority_max sched_get_priority_min sched_rr_get_interval
        sched_rr_get_interval_time64 getpriority setpriority ioprio_get ioprio_set
    """),
    # User and group ids and capabilities (changing them is checked by the kernel).
    "identity": _names("""
        getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32 getresuid
        getresuid32 getresgid getresgid32 getgroups getgroups32 setuid setuid32 setgid setgid32
        setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid setresgid32
        setfsuid setfsuid32 setfsgid setfsgid32 setgroups setgroups32 capget capset
    """),
    # Resource limits and usage, facts about the system, randomness.
    "limits and info": _names("""
        getrlimit ugetrlimit setrlimit prlimit64 getrusage sysinfo uname getrandom
        riscv_hwprobe statmount listmount
    """),
    # Restricting oneself further.
    "self-restriction": _names("""
        prctl seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self
    """),
    # System V and POSIX message queues, semaphores and shared memory (the container's own
    # IPC namespace).
    "ipc": _names("""
        ipc msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl shmget
        shmat shmdt shmctl mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive
        mq_timedreceive_time64 mq_notify mq_getsetattr
    """),
    # Sockets once made (``socket`` itself has its rule; ``socketcall`` is 32-bit x86's door
    # to all of them).
    "sockets": _names("""
        socketpair bind listen accept accept4 connect getsockname getpeername getsockopt
        setsockopt send sendto sendmsg sendmmsg recv recvfrom recvmsg recvmmsg recvmmsg_time64
        shutdown socketcall
    """),
}

#: System calls allowed only when the container holds a capability (in its bounding set): the
#: capability is what the kernel checks for them, so with it the filter no longer needs to.
CAPABILITY_SYSCALLS: Final[dict[str, tuple[str, ...]]] = {
    # Mounts, namespaces, host and domain names, quotas, fanotify, the new mount API, BPF and
    # perf (as CAP_SYS_ADMIN held them before CAP_BPF/CAP_PERFMON), the kernel log, LSM
    # attributes. With it, ``clone``/``clone3`` may create namespaces.
    "CAP_SYS_ADMIN": _names("""
        mount umount umount2 mount_setattr move_mount open_tree fsopen fsconfig fsmount fspick
        unshare setns clone clone3 sethostname setdomainname quotactl quotactl_fd fanotify_init
        lookup_dcookie bpf perf_event_open syslog lsm_get_self_attr lsm_set_self_attr
        lsm_list_modules
    """),
    "CAP_DAC_READ_SEARCH": _names("open_by_handle_at"),
    "CAP_SYS_BOOT": _names("reboot"),
    "CAP_SYS_CHROOT": _names("chroot"),
    "CAP_SYS_MODULE": _names("init_module finit_module delete_module"),
    "CAP_SYS_PACCT": _names("acct"),
    # Inspecting and controlling other processes.
    "CAP_SYS_PTRACE": _names("""
        ptrace process_vm_readv process_vm_writev process_madvise kcmp pidfd_getfd
    """),
    "CAP_SYS_RAWIO": _names("iopl ioperm"),
    "CAP_SYS_TIME": _names("settimeofday stime clock_settime clock_settime64"),
    "CAP_SYS_TTY_CONFIG": _names("vhangup"),
    # NUMA memory placement.
    "CAP_SYS_NICE": _names("get_mempolicy set_mempolicy set_mempolicy_home_node mbind"),
    "CAP_SYSLOG": _names("syslog"),
    "CAP_BPF": _names("bpf"),
    "CAP_PERFMON": _names("perf_event_open"),
}

#: Allowed from this kernel on: before 4.8 a traced process could skip the filter (the tracer
#: changed the system call after the check).
FROM_KERNEL: Final = (((4, 8), _names("ptrace process_vm_readv process_vm_writev")),)

#: System calls of one architecture family (libseccomp's names for the machine).
ARCH_SYSCALLS: Final[tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]] = (
    (("amd64", "x32"), _names("arch_prctl")),
    (("amd64", "x32", "x86"), _names("modify_ldt")),
    (("arm", "arm64"), _names("arm_fadvise64_64 arm_sync_file_range sync_file_range2")),
    (("arm", "arm64"), _names("breakpoint cacheflush set_tls")),
    (("ppc64le",), _names("sync_file_range2 swapcontext")),
    (("s390", "s390x"), _names("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr")),
    (("riscv64",), _names("riscv_flush_icache")),
)

_CLONE_NAMESPACES: Final = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
_AF_ALG: Final = 38
_AF_VSOCK: Final = 40


@dataclass(frozen=True, slots=True)
class ArgRule:
    """``syscall`` allowed when its argument ``index`` compares (``op``) to ``value``; several
    rules for one call are alternatives. ``unless`` names the capability that lifts the rule
    (the call is then allowed whole, by :data:`CAPABILITY_SYSCALLS`); ``arches``/``not_arches``
    limit it to, or keep it off, architectures."""

    syscall: str
    why: str
    index: int
    op: str
    value: int
    value_two: int = 0
    unless: str = ""
    arches: tuple[str, ...] = ()
    not_arches: tuple[str, ...] = ()


_NO_NAMESPACES = "a thread or process, not new namespaces (an escape's first step)"
#: Harmless personalities: Linux, with ADDR_NO_RANDOMIZE and/or UNAME26 only (``setarch``,
#: ``linux32``), and the query 0xffffffff. Others change how the kernel reads memory.
_PERSONAS: Final = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

ARG_RULES: Final[tuple[ArgRule, ...]] = (
    ArgRule("clone", _NO_NAMESPACES, 0, "SCMP_CMP_MASKED_EQ", _CLONE_NAMESPACES,
            unless="CAP_SYS_ADMIN", not_arches=("s390", "s390x")),
    ArgRule("clone", _NO_NAMESPACES + "; s390 passes the flags second", 1, "SCMP_CMP_MASKED_EQ",
            _CLONE_NAMESPACES, unless="CAP_SYS_ADMIN", arches=("s390", "s390x")),
    *(ArgRule("personality", "only harmless personalities", 0, "SCMP_CMP_EQ", persona)
      for persona in _PERSONAS),
    # Every address family but AF_ALG (the kernel's crypto, a large attack surface) and
    # AF_VSOCK (talks to the hypervisor, past the network namespace). For direct ``socket``
    # calls only: 32-bit x86's ``socketcall`` multiplexer (allowed, as in dockerd's policy, for
    # the C libraries that still use it) passes its arguments in memory, out of a filter's
    # reach.
    ArgRule("socket", "families below AF_ALG", 0, "SCMP_CMP_LT", _AF_ALG),
    ArgRule("socket", "the family between AF_ALG and AF_VSOCK", 0, "SCMP_CMP_EQ", _AF_ALG + 1),
    ArgRule("socket", "families above AF_VSOCK", 0, "SCMP_CMP_GT", _AF_VSOCK),
)  # fmt: skip

#: ``clone3`` passes its flags in memory a filter cannot read: without CAP_SYS_ADMIN it says
#: ENOSYS, so the C library falls back to ``clone`` and its rule.
ENOSYS_UNLESS: Final = (("clone3", "CAP_SYS_ADMIN"),)

#: The filter's architectures: the machine's, and those whose programs it also runs (32-bit x86
#: and x32 on x86_64, 32-bit ARM on arm64...); a call from any other is refused.
ARCH_FAMILIES: Final = {
    "SCMP_ARCH_X86_64": ("SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "SCMP_ARCH_AARCH64": ("SCMP_ARCH_ARM",),
    "SCMP_ARCH_MIPS64": ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"),
    "SCMP_ARCH_MIPS64N32": ("SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"),
    "SCMP_ARCH_MIPSEL64": ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"),
    "SCMP_ARCH_MIPSEL64N32": ("SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"),
    "SCMP_ARCH_S390X": ("SCMP_ARCH_S390",),
    "SCMP_ARCH_RISCV64": (),
    "SCMP_ARCH_LOONGARCH64": (),
}
