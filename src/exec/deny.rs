//! The exec deny-list: programs and arguments no exec policy rule can allow.
//!
//! The allow-list (exact argv, exact env) is the control; this table is the
//! backstop for a rule written carelessly. It is one data table, so what it covers
//! is exactly what README's security section says, and every entry is tested.
//!
//! Programs are compared on the lower-cased basename of **every** argv element (and
//! of the value after the last `=` of an element), not only argv[0]: a wrapper such
//! as `env sh` or `timeout 5 /bin/sh` hides the program it runs in a later element.
//! A table name matches the basename itself and any versioned or suffixed form
//! (`python3.11`, `php8.2`, `sh.distrib`, `mkfs.ext4`); a name ending in `*` matches
//! any basename starting with it (`ld-linux-x86-64.so.2`).

use serde::Serialize;

/// What kind of entry refused an argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyClass {
    /// A command shell: runs whatever its arguments say.
    Shell,
    /// A language interpreter, editor or build tool that can run code or a shell.
    Interpreter,
    /// Runs another program given in its arguments (or as another user).
    Wrapper,
    /// Destroys data, changes permissions, users or the network, or controls
    /// containers and the host.
    Tool,
    /// An argument that makes an otherwise harmless program run code or delete.
    Argument,
}

impl DenyClass {
    pub fn describe(self) -> &'static str {
        match self {
            DenyClass::Shell => "a shell",
            DenyClass::Interpreter => "an interpreter that can run code",
            DenyClass::Wrapper => "a wrapper that runs another program",
            DenyClass::Tool => "a destructive or privileged tool",
            DenyClass::Argument => "an argument that runs code or deletes files",
        }
    }
}

/// Programs, by class. Keep each list sorted; README lists the same names.
pub const PROGRAMS: &[(DenyClass, &[&str])] = &[
    (
        DenyClass::Shell,
        &[
            "ash",
            "bash",
            "busybox-sh",
            "csh",
            "dash",
            "elvish",
            "fish",
            "ksh",
            "mksh",
            "nu",
            "pdksh",
            "posh",
            "powershell",
            "pwsh",
            "rbash",
            "sh",
            "tcsh",
            "xonsh",
            "yash",
            "zsh",
        ],
    ),
    (
        DenyClass::Interpreter,
        &[
            "awk",
            "bun",
            "dc",
            "deno",
            "ed",
            "elixir",
            "emacs",
            "erl",
            "escript",
            "ex",
            "expect",
            "gawk",
            "gdb",
            "ghci",
            "gmake",
            "groovy",
            "gsed",
            "guile",
            "iex",
            "irb",
            "jshell",
            "julia",
            "lua",
            "luajit",
            "m4",
            "make",
            "mawk",
            "nawk",
            "node",
            "nodejs",
            "nvim",
            "octave",
            "osascript",
            "perl",
            "php",
            "php-cgi",
            "pypy",
            "python",
            "r",
            "racket",
            "rscript",
            "ruby",
            "runghc",
            "runhaskell",
            "sbcl",
            "sed",
            "tclsh",
            "vi",
            "view",
            "vim",
            "wish",
        ],
    ),
    (
        DenyClass::Wrapper,
        &[
            "at",
            "batch",
            "busybox",
            "bwrap",
            "capsh",
            "catchsegv",
            "cgexec",
            "chpst",
            "chroot",
            "chrt",
            "cpulimit",
            "dbus-run-session",
            "doas",
            "eatmydata",
            "env",
            "envdir",
            "fakeroot",
            "faketime",
            "firejail",
            "flock",
            "gosu",
            "ionice",
            "ld-linux*",
            "ld-musl*",
            "ld.so",
            "ltrace",
            "newgrp",
            "nice",
            "nsenter",
            "nocache",
            "nohup",
            "numactl",
            "parallel",
            "prlimit",
            "proot",
            "rlwrap",
            "runcon",
            "runuser",
            "script",
            "setpriv",
            "setsid",
            "setuidgid",
            "sg",
            "softlimit",
            "ssh",
            "sshpass",
            "start-stop-daemon",
            "stdbuf",
            "strace",
            "su",
            "su-exec",
            "sudo",
            "systemd-run",
            "taskset",
            "time",
            "timeout",
            "toybox",
            "unbuffer",
            "unshare",
            "valgrind",
            "watch",
            "xargs",
        ],
    ),
    (
        DenyClass::Tool,
        &[
            "chattr",
            "chgrp",
            "chmod",
            "chown",
            "chpasswd",
            "crictl",
            "ctr",
            "curl",
            "dd",
            "docker",
            "docker-compose",
            "fdisk",
            "ftp",
            "git",
            "groupadd",
            "groupmod",
            "halt",
            "ifconfig",
            "init",
            "insmod",
            "ip",
            "ip6tables",
            "iptables",
            "kill",
            "killall",
            "kubectl",
            "losetup",
            "mkfs",
            "mknod",
            "modprobe",
            "mount",
            "nc",
            "ncat",
            "nerdctl",
            "netcat",
            "nft",
            "parted",
            "passwd",
            "pkill",
            "podman",
            "poweroff",
            "reboot",
            "rm",
            "rmdir",
            "rmmod",
            "route",
            "rsync",
            "runc",
            "scp",
            "service",
            "setfacl",
            "sfdisk",
            "sftp",
            "shred",
            "shutdown",
            "socat",
            "sysctl",
            "systemctl",
            "telinit",
            "telnet",
            "tftp",
            "truncate",
            "umount",
            "useradd",
            "userdel",
            "usermod",
            "visudo",
            "wget",
            "wipefs",
        ],
    ),
];

/// Arguments refused wherever they appear: `find`'s actions, `tar`'s program hooks,
/// and inline-code options. A long option is also refused in its `--opt=value` form
/// and abbreviated (GNU getopt accepts any unambiguous prefix, e.g. `--to-com`).
pub const ARGUMENTS: &[&str] = &[
    "--checkpoint-action",
    "--eval",
    "--exec",
    "--info-script",
    "--new-volume-script",
    "--rmt-command",
    "--rsh-command",
    "--to-command",
    "--use-compress-program",
    "-delete",
    "-exec",
    "-execdir",
    "-fls",
    "-fprint",
    "-fprint0",
    "-fprintf",
    "-ok",
    "-okdir",
];

/// `tar`'s short forms of `--use-compress-program` (`-I`) and `--info-script`
/// (`-F`), also inside an option cluster (`-xIf`, old-style `xIf`).
const TAR_NAMES: &[&str] = &["bsdtar", "gtar", "tar"];
const TAR_SHORT: &[char] = &['I', 'F'];

/// `env.sh` or `init.py` is a script file (run through its own `#!` line), not the
/// program `env` or `init`; other suffixes (`sh.distrib`, `mkfs.ext4`) are variants.
const SCRIPT_EXTENSIONS: &[&str] = &["bash", "js", "lua", "php", "pl", "py", "rb", "sh"];

/// Shortest abbreviation of a long option that counts as that option.
const MIN_ABBREVIATION: usize = 5;

/// One refusal: which element, which entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DenyHit {
    pub class: DenyClass,
    /// The table entry that matched.
    pub entry: &'static str,
    /// Index of the argv element that matched.
    pub argv_index: usize,
}

impl std::fmt::Display for DenyHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "argv[{}] is {} (deny-list entry `{}`); no exec policy rule can allow it",
            self.argv_index,
            self.class.describe(),
            self.entry
        )
    }
}

fn basename(s: &str) -> String {
    s.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(s)
        .to_lowercase()
}

/// Whether `base` is the program `entry` (see the module header for the forms).
fn program_matches(entry: &str, base: &str) -> bool {
    if let Some(prefix) = entry.strip_suffix('*') {
        return base.starts_with(prefix);
    }
    let Some(rest) = base.strip_prefix(entry) else {
        return false;
    };
    let version = rest.trim_start_matches('-');
    rest.is_empty()
        || version.starts_with(|c: char| c.is_ascii_digit())
        || (rest.starts_with('.') && !SCRIPT_EXTENSIONS.contains(&&rest[1..]))
}

fn program_hit(element: &str) -> Option<(DenyClass, &'static str)> {
    let mut names = vec![basename(element)];
    if let Some((_, value)) = element.rsplit_once('=') {
        names.push(basename(value));
    }
    for name in names.iter().filter(|n| !n.is_empty()) {
        for (class, entries) in PROGRAMS {
            if let Some(e) = entries.iter().find(|e| program_matches(e, name)) {
                return Some((*class, e));
            }
        }
    }
    None
}

fn argument_hit(element: &str) -> Option<&'static str> {
    let option = element.split('=').next().unwrap_or(element).to_lowercase();
    ARGUMENTS.iter().copied().find(|a| {
        option == *a
            || (a.starts_with("--")
                && option.starts_with("--")
                && option.len() >= MIN_ABBREVIATION
                && a.starts_with(option.as_str()))
    })
}

fn tar_cluster_hit(argv: &[String]) -> Option<(usize, &'static str)> {
    let program = basename(argv.first()?);
    if !TAR_NAMES.contains(&program.as_str()) {
        return None;
    }
    argv.iter().enumerate().skip(1).find_map(|(i, a)| {
        // `-xIf` anywhere, or the old-style first argument `xIf` without a dash.
        let cluster = match a.strip_prefix('-') {
            Some(rest) if !rest.starts_with('-') => rest,
            None if i == 1 => a.as_str(),
            _ => return None,
        };
        // A cluster's letters end at the first option that takes an argument, but
        // refusing any I/F in it is the conservative reading.
        cluster
            .chars()
            .find(|c| TAR_SHORT.contains(c))
            .map(|c| (i, if c == 'I' { "tar -I" } else { "tar -F" }))
    })
}

/// The whole table, for `security/exec-policy`.
pub fn listing() -> serde_json::Value {
    let programs: serde_json::Map<String, serde_json::Value> = PROGRAMS
        .iter()
        .map(|(class, names)| {
            let key = serde_json::to_value(class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            (key, serde_json::json!(names))
        })
        .collect();
    serde_json::json!({
        "programs": programs,
        "arguments": ARGUMENTS,
        "tar_short_options": TAR_SHORT.iter().map(|c| format!("-{c}")).collect::<Vec<_>>(),
        "matching": "the lower-cased basename of every argv element, and of the value after its last '='; \
                     a name also matches its versioned or suffixed forms (python3.11, php8.2, sh.distrib, mkfs.ext4) \
                     but not a script file of that name (env.sh); long arguments also as --opt=value and abbreviated",
    })
}

/// The deny-list verdict on one argv: `None` when no entry matches.
pub fn check(argv: &[String]) -> Option<DenyHit> {
    for (i, element) in argv.iter().enumerate() {
        if let Some((class, entry)) = program_hit(element) {
            return Some(DenyHit {
                class,
                entry,
                argv_index: i,
            });
        }
        if let Some(entry) = argument_hit(element) {
            return Some(DenyHit {
                class: DenyClass::Argument,
                entry,
                argv_index: i,
            });
        }
    }
    tar_cluster_hit(argv).map(|(i, entry)| DenyHit {
        class: DenyClass::Argument,
        entry,
        argv_index: i,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn class_of(a: &[&str]) -> Option<DenyClass> {
        check(&argv(a)).map(|h| h.class)
    }

    #[test]
    fn the_issue_examples_are_all_refused() {
        for (a, class, index) in [
            (&["env", "sh", "-c", "id"][..], DenyClass::Wrapper, 0),
            (&["nice", "bash"], DenyClass::Wrapper, 0),
            (&["timeout", "5", "/bin/sh"], DenyClass::Wrapper, 0),
            (&["python3", "-c", "print(1)"], DenyClass::Interpreter, 0),
            (&["perl", "-e", "1"], DenyClass::Interpreter, 0),
            (&["php", "-r", "echo 1;"], DenyClass::Interpreter, 0),
            (&["node", "--eval", "1"], DenyClass::Interpreter, 0),
            (&["awk", "BEGIN{system(\"id\")}"], DenyClass::Interpreter, 0),
            (&["find", "/", "-delete"], DenyClass::Argument, 2),
        ] {
            let hit = check(&argv(a)).unwrap_or_else(|| panic!("{a:?} passed"));
            assert_eq!((hit.class, hit.argv_index), (class, index), "{a:?}");
        }
    }

    #[test]
    fn shells_anywhere_in_the_argv() {
        for a in [
            &["sh"][..],
            &["/bin/sh", "-c", "x"],
            &["/usr/local/bin/BASH"],
            &["/bin/sh.distrib"],
            &["/opt/x", "--shell=/bin/zsh"],
            &["/opt/x", "dash"],
            &["//bin//sh/"],
        ] {
            assert_eq!(class_of(a), Some(DenyClass::Shell), "{a:?}");
        }
    }

    #[test]
    fn interpreters_by_basename_and_version() {
        for a in [
            &["python3.11", "/opt/tool.py"][..],
            &["/usr/bin/php8.2", "x.php"],
            &["perl5.36.0"],
            &["lua5.4"],
            &["perl-5.36"],
            &["gawk", "1"],
            &["sed", "e id"],
            &["vim", "-c", "!id"],
            &["/opt/run", "ruby"],
        ] {
            assert_eq!(class_of(a), Some(DenyClass::Interpreter), "{a:?}");
        }
    }

    #[test]
    fn wrappers_and_multi_call_binaries() {
        for a in [
            &["busybox", "touch", "/x"][..],
            &["toybox", "ls"],
            &["xargs", "-0"],
            &["stdbuf", "-o0", "/x.sh"],
            &["sudo", "-u", "www-data", "/x.sh"],
            &["/lib64/ld-linux-x86-64.so.2", "/x"],
            &["flock", "/tmp/l", "/x.sh"],
            &["setsid", "/x.sh"],
        ] {
            assert_eq!(class_of(a), Some(DenyClass::Wrapper), "{a:?}");
        }
    }

    #[test]
    fn destructive_and_privileged_tools() {
        for a in [
            &["rm", "-rf", "/"][..],
            &["mkfs.ext4", "/dev/sda"],
            &["docker", "stop", "nextcloud-aio-nextcloud"],
            &["curl", "x"],
            &["ip6tables", "-F"],
            &["/usr/bin/git", "status"],
        ] {
            assert_eq!(class_of(a), Some(DenyClass::Tool), "{a:?}");
        }
    }

    #[test]
    fn code_and_delete_arguments_in_any_form() {
        for a in [
            &["find", "/", "-exec", "x", ";"][..],
            &["find", "/", "-execdir", "x"],
            &["find", "/", "-ok", "x"],
            &["find", "/", "-fprint", "/etc/x"],
            &["tar", "-xf", "a.tar", "--to-command=x"],
            &["tar", "-xf", "a.tar", "--to-com", "x"],
            &["tar", "-cf", "a", "--checkpoint-action=exec=x", "."],
            &["tar", "-xIf", "x", "a.tar"],
            &["tar", "xIf", "x", "a.tar"],
            &["tar", "-F", "x"],
            &["/opt/tool", "--eval", "x"],
            &["/opt/tool", "--EXEC=x"],
        ] {
            assert_eq!(class_of(a), Some(DenyClass::Argument), "{a:?}");
        }
    }

    #[test]
    fn ordinary_commands_pass() {
        for a in [
            &["/daily-backup.sh"][..],
            &["/healthcheck.sh"],
            &["ls", "-la", "/mnt"],
            &["tar", "-tf", "a.tar"],
            &["touch", "/tmp/x"],
            &["/opt/shell-report", "--exclude=x", "--ex"],
            &["cat", "/etc/hostname"],
            &["grep", "-e", "x", "/f"],
            &["/usr/bin/shasum", "x"],
            &["ipcs"],
            &["rmate"],
            &["/init.sh"],
            &["/opt/env.py", "time.rb"],
        ] {
            assert_eq!(check(&argv(a)), None, "{a:?}");
        }
    }

    /// topics.md lists exactly what the table covers.
    #[test]
    fn topics_md_lists_every_entry() {
        let doc = include_str!("../../topics.md");
        let start = doc
            .find("**The deny-list**")
            .expect("topics.md deny-list section");
        let section = &doc[start..];
        let section = &section[..section.find("\n### ").unwrap_or(section.len())];
        let words: std::collections::BTreeSet<&str> = section
            .split(|c: char| c.is_whitespace() || "`,;:()".contains(c))
            .collect();
        for (_, names) in PROGRAMS {
            for n in *names {
                assert!(words.contains(n), "topics.md does not list {n}");
            }
        }
        for a in ARGUMENTS {
            assert!(words.contains(a), "topics.md does not list {a}");
        }
    }

    fn denied_program() -> impl Strategy<Value = String> {
        let names: Vec<&'static str> = PROGRAMS
            .iter()
            .flat_map(|(_, n)| n.iter().copied())
            .collect();
        (
            proptest::sample::select(names),
            "(/[a-z]{1,6}){0,3}/?",
            proptest::option::of("[0-9]{1,2}(\\.[0-9]{1,2})?"),
            proptest::bool::ANY,
        )
            .prop_map(|(name, dir, version, upper)| {
                let name = name.trim_end_matches('*');
                let name = if upper {
                    name.to_uppercase()
                } else {
                    name.to_string()
                };
                let dir = if dir.is_empty() || dir.ends_with('/') {
                    dir
                } else {
                    format!("{dir}/")
                };
                format!("{dir}{name}{}", version.unwrap_or_default())
            })
    }

    proptest! {
        /// No argv holding a denied program anywhere passes, whatever surrounds it.
        #[test]
        fn a_denied_basename_anywhere_is_refused(
            before in proptest::collection::vec("[ -~]{0,12}", 0..4),
            program in denied_program(),
            after in proptest::collection::vec("[ -~]{0,12}", 0..4),
            as_value in proptest::bool::ANY,
        ) {
            let element = if as_value { format!("--opt={program}") } else { program };
            let mut a = before;
            a.push(element);
            a.extend(after);
            prop_assert!(check(&a).is_some(), "{a:?} passed");
        }

        /// A denied argument anywhere, in `--opt=value` form too, is refused.
        #[test]
        fn a_denied_argument_anywhere_is_refused(
            before in proptest::collection::vec("[a-z/.]{1,12}", 1..4),
            arg in proptest::sample::select(ARGUMENTS),
            value in proptest::option::of("[ -~]{0,8}"),
        ) {
            let mut a = before;
            a.push(match value { Some(v) => format!("{arg}={v}"), None => arg.to_string() });
            prop_assert!(check(&a).is_some(), "{a:?} passed");
        }
    }
}
