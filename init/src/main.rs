//! `berth-init` entry point.
//!
//! On musl (the device build) the binary is `no_std` and `no_main`: the C runtime calls
//! `main`, the allocator is the C library's, and a panic (which the code is written never
//! to reach) reboots instead of unwinding. Elsewhere (host builds for the test mode) it
//! is an ordinary std binary. Both call [`init::boot::main`].
#![cfg_attr(target_env = "musl", no_std, no_main)]

#[cfg(target_env = "musl")]
mod device {
    use core::ffi::{c_char, c_int};

    #[global_allocator]
    static ALLOC: sys::Malloc = sys::Malloc;

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        // PID 1 must not exit: log, sync and reboot; the boot counter does the rest.
        let log = init::log::Log::stderr();
        log.line(&[b"panic; rebooting"]);
        rustix::fs::sync();
        loop {
            let _ = rustix::system::reboot(rustix::system::RebootCommand::Restart);
        }
    }

    fn exec(
        path: &core::ffi::CStr,
        argv: &[&core::ffi::CStr],
        envp: &[&core::ffi::CStr],
    ) -> rustix::io::Errno {
        rustix::io::Errno::from_raw_os_error(sys::execve(path, argv, envp))
    }

    /// Called by the C runtime's start code.
    // The C runtime finds `main` by name: exporting it is the only way into a no_std
    // binary. The body does nothing unsafe itself beyond handing argv to `sys::args`.
    #[allow(unsafe_code)]
    #[unsafe(no_mangle)]
    extern "C" fn main(
        argc: c_int,
        argv: *const *const c_char,
        envp: *const *const c_char,
    ) -> c_int {
        // SAFETY: these are the C runtime's argc/argv/envp, valid for the process's life.
        let (args, env) = unsafe { sys::args(argc, argv, envp) };
        init::boot::main(&init::boot::Host {
            args: &args,
            env: &env,
            exec,
        })
    }
}

#[cfg(not(target_env = "musl"))]
fn main() -> std::process::ExitCode {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStringExt;
    use std::os::unix::process::CommandExt;

    fn exec(
        path: &std::ffi::CStr,
        argv: &[&std::ffi::CStr],
        envp: &[&std::ffi::CStr],
    ) -> rustix::io::Errno {
        use std::os::unix::ffi::OsStrExt;
        let os = |c: &std::ffi::CStr| std::ffi::OsStr::from_bytes(c.to_bytes()).to_owned();
        let mut cmd = std::process::Command::new(os(path));
        cmd.args(argv.iter().skip(1).map(|a| os(a))).env_clear();
        for kv in envp {
            if let Some((k, v)) = kv
                .to_bytes()
                .split_at_checked(kv.to_bytes().iter().position(|&c| c == b'=').unwrap_or(0))
            {
                cmd.env(
                    std::ffi::OsStr::from_bytes(k),
                    std::ffi::OsStr::from_bytes(v.get(1..).unwrap_or_default()),
                );
            }
        }
        let err = cmd.exec();
        rustix::io::Errno::from_raw_os_error(err.raw_os_error().unwrap_or(libc_eio()))
    }
    const fn libc_eio() -> i32 {
        5
    }

    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.into_vec()).ok())
        .collect();
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            CString::new(kv).ok()
        })
        .collect();
    let args: Vec<&std::ffi::CStr> = args.iter().map(CString::as_c_str).collect();
    let env: Vec<&std::ffi::CStr> = env.iter().map(CString::as_c_str).collect();
    let code = init::boot::main(&init::boot::Host {
        args: &args,
        env: &env,
        exec,
    });
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
