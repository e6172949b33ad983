use super::*;
use crate::domain::RepositoryLabel;
use crate::exec::borgmatic::Repository;

fn argv(action: Action) -> Vec<String> {
    let dir = std::path::Path::new("/cfg");
    let repo = Repository {
        label: RepositoryLabel::parse("nc").unwrap(),
        config: dir.join("nc.yaml"),
    };
    Borgmatic::for_tests(dir)
        .task(&repo, &JobSecrets::default(), action)
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn repo_create_and_key_export() {
    let mode = Some(EncryptionMode::RepokeyBlake2);
    assert_eq!(
        argv(Action::RepoCreate { encryption: mode })[2..],
        ["repo-create", "--encryption=repokey-blake2"]
    );
    assert_eq!(
        argv(Action::RepoCreate { encryption: None })[2..],
        ["repo-create"]
    );
    let path = PathBuf::from("/keys/nc-1.key");
    assert_eq!(
        argv(Action::KeyExport {
            path: path.clone(),
            paper: false
        })[2..],
        ["key", "export", "--path=/keys/nc-1.key"]
    );
    assert_eq!(
        argv(Action::KeyExport { path, paper: true })[2..],
        ["key", "export", "--paper", "--path=/keys/nc-1.key"]
    );
}
