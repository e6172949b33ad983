//! The Jinja templates and enum options of the repository entities: what Home
//! Assistant shows from the worker's retained summaries. Kept apart from the entity
//! table so a template change is reviewed as one. Imports nothing.

/// Options of the backup result sensor (`result` of `last/<repo>/backup`).
pub const BACKUP_RESULTS: &[&str] = &[
    "succeeded",
    "partial",
    "warning",
    "failed",
    "cancelled",
    "interrupted",
];

/// Options of the verification result sensor.
pub const VERIFY_RESULTS: &[&str] = &["verified", "failed", "cancelled", "interrupted"];

/// What the last-result sensor shows as attributes: the archive, the reason and
/// what a partial backup left out.
pub(super) const LAST_RESULT_ATTRIBUTES: &str = "{{ {'archive': value_json.archive, \
'job_id': value_json.job_id, \
'error': value_json.error, \
'reason': value_json.reason if value_json.reason is defined and value_json.reason else value_json.error, \
'partial': value_json.partial | default(false), \
'skipped_files': value_json.skipped_files | default(0), \
'skipped_reasons': value_json.skipped_reasons | default({}), \
'skipped': value_json.skipped | default([])} | tojson }}";

pub(super) const VERIFY_ATTRIBUTES: &str = "{{ {'archive': value_json.archive, \
'job_id': value_json.job_id, 'error': value_json.error, \
'sampled': value_json.sampled, 'matched': value_json.matched, \
'mismatched': value_json.mismatched, 'missing': value_json.missing} | tojson }}";

pub(super) const VERIFY_RESULT: &str = "{{ 'verified' if value_json.verified else \
(value_json.result if value_json.result in ['cancelled', 'interrupted'] else 'failed') }}";
