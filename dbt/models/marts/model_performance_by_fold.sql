-- Out-of-fold performance of every break-model training run, fold by fold, with skill vs the
-- base-rate predictor and the run's mean over its folds. Empty until a model has been trained.
with folds as (
    select * from {{ ref('stg_break_model_folds') }}
)

select
    run_id || '/' || scheme || '/' || fold as fold_id,
    run_id,
    scheme,
    fold,
    test_session,
    n_train,
    n_test,
    purged,
    auc,
    log_loss,
    log_loss_base,
    1 - log_loss / nullif(log_loss_base, 0) as log_loss_skill,
    brier,
    brier_base,
    1 - brier / nullif(brier_base, 0) as brier_skill,
    ece,
    count(*) over run_scheme as folds_in_run,
    avg(auc) over run_scheme as run_mean_auc,
    avg(1 - brier / nullif(brier_base, 0)) over run_scheme as run_mean_brier_skill
from folds
window run_scheme as (partition by run_id, scheme)
order by run_id, scheme, fold
