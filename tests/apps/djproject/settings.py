"""Minimal Django settings: no database, no templates, two views."""

SECRET_KEY = "porch-integration-tests-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djproject.urls"
INSTALLED_APPS = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
DATABASES = {}
USE_TZ = True
WSGI_APPLICATION = "djproject.wsgi.application"
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024
