//! The deny-list against the argv forms a careless rule could let through: shells,
//! interpreters, wrappers and destructive tools anywhere in the argv, and harmful
//! arguments in any spelling.
//!
//! Test code: may import any module (`scripts/import-cycles` counts production code only).

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
    let doc = include_str!("../../../topics.md");
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
