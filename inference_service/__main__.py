from inference_service.server import main

main()
