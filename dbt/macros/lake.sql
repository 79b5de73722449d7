{#-
  Lake sources are Parquet globs (`<lake>/<layer>/<table>/date=*/part-*.parquet`, see sources.yml).
  A table that no asset has written yet (e.g. ml/break_predictions before the first model is trained,
  reports/retrieval_predictions before the first evaluation) has no files, and DuckDB's
  read_parquet fails on an empty glob. `lake_source` checks the glob at run time and falls back to
  an empty relation typed like the documented schema, so downstream models build (with zero rows)
  instead of failing.
-#}

{% macro lake_glob(source_name, table_name) -%}
    {%- set node = graph.sources.values() | selectattr('source_name', 'equalto', source_name)
                   | selectattr('name', 'equalto', table_name) | first -%}
    {{- node.meta.lake_glob | replace('{name}', node.name) -}}
{%- endmacro %}

{% macro lake_has_files(source_name, table_name) -%}
    {%- set pattern = lake_glob(source_name, table_name) -%}
    {%- set result = run_query("select count(*) from glob('" ~ pattern | replace("'", "''") ~ "')") -%}
    {{- return(result.columns[0].values()[0] > 0) -}}
{%- endmacro %}

{% macro empty_relation(columns) -%}
    select
    {%- for name, type in columns.items() %}
        cast(null as {{ type }}) as {{ name }}{{ "," if not loop.last }}
    {%- endfor %}
    where false
{%- endmacro %}

{#- `select * from {{ lake_source(...) }}` reads the source, or `columns` (name → DuckDB type) with no
    rows when its table has no partition yet. source() is always called so dbt (and Dagster) keep the
    lineage edge either way. -#}
{% macro lake_source(source_name, table_name, columns) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if execute and not lake_has_files(source_name, table_name) -%}
        {{ log("lake table " ~ source_name ~ "/" ~ table_name ~ " has no partition yet: reading it as empty",
               info=true) }}
        ({{ empty_relation(columns) }})
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

{#- `cast(c as type) as c, ...` for a staging model's column dict: the same types whether the table
    was read or stood in for by `empty_relation`. -#}
{% macro typed_columns(columns, exclude=[]) -%}
    {%- for name, type in columns.items() if name not in exclude %}
    cast({{ name }} as {{ type }}) as {{ name }}{{ "," if not loop.last }}
    {%- endfor %}
{%- endmacro %}
