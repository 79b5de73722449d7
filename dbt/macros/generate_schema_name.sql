{#- Models land in the schema their folder configures (`staging`, `marts`), not `main_staging`:
    analysts query `marts.daily_level_stats` next to the lake views (`main.silver_events`). -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name is not none else target.schema }}
{%- endmacro %}
