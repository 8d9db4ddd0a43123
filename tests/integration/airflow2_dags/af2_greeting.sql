SELECT '{{ ds }}' AS day FROM {{ params.table }}
