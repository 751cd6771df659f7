
bind = '0.0.0.0:8000'
workers = 4
worker_class = 'gthread'
threads = 4
timeout = 7200
keepalive = 75
max_requests = 1000
max_requests_jitter = 50
limit_request_line = 0
limit_request_field_size = 0
limit_request_fields = 0

