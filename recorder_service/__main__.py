from recorder_service.service import main

main()
