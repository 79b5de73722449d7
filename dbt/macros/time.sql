{#- int64 ns UTC (the lake's time convention) → local America/New_York timestamp (DST-aware). -#}
{% macro ns_to_et(column) -%}
    timezone('America/New_York', to_timestamp({{ column }} / 1e9))
{%- endmacro %}
